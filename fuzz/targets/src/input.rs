//! How a fuzz input is cut into the pieces a target needs. Every format is plain text, so seeds
//! are written by hand (`fuzz/seeds.py`) and a crash input reads as a request.

/// Splits at the first `sep`: `(before, Some(after))`, or `(all, None)`.
pub fn split_once<'a>(data: &'a [u8], sep: &[u8]) -> (&'a [u8], Option<&'a [u8]>) {
    match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], Some(&data[i + sep.len()..])),
        None => (data, None),
    }
}

/// Every piece between `sep`s.
pub fn split_all<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    loop {
        let (piece, rest) = split_once(data, sep);
        pieces.push(piece);
        match rest {
            Some(rest) => data = rest,
            None => return pieces,
        }
    }
}

/// Bytes as text the way the host reads header values (invalid UTF-8 becomes U+FFFD).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first line and the rest.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = split_once(data, b"\n");
    (line, rest.unwrap_or_default())
}

/// A message: header lines (`name: value`, pseudo-headers as `:path: /x`), an empty line, the
/// body. A first line `@<unix ms>` sets the clock.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// `@<ms>` if given.
    pub now_ms: Option<u64>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body (may be empty).
    pub body: Vec<u8>,
}

impl Message {
    /// Parses the format above; anything parses.
    pub fn parse(data: &[u8]) -> Self {
        let (head, body) = split_once(data, b"\n\n");
        let mut message = Self {
            body: body.unwrap_or_default().to_vec(),
            ..Self::default()
        };
        for line in text(head).lines() {
            if let Some(ms) = line.strip_prefix('@') {
                message.now_ms = ms.trim().parse().ok();
                continue;
            }
            let from = usize::from(line.starts_with(':'));
            let Some(colon) = line.get(from..).and_then(|l| l.find(':')) else {
                continue;
            };
            let (name, value) = line.split_at(from + colon);
            let value = value.get(1..).unwrap_or_default();
            let value = value.strip_prefix(' ').unwrap_or(value);
            message.headers.push((name.to_string(), value.to_string()));
        }
        message
    }

    /// The first value of a header (case-insensitive name), or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// Headers as the `&str` pairs the fake host takes.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// Reads little-endian u64s from the front of `data` (missing bytes read as zero).
pub fn words(data: &[u8], n: usize) -> (Vec<u64>, &[u8]) {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        let mut word = [0u8; 8];
        let take = rest.len().min(8);
        word[..take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
        out.push(u64::from_le_bytes(word));
    }
    (out, rest)
}
