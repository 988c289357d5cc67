//! A minimal HTTP/1.1 keep-alive load generator: pre-rendered requests, raw sockets, so the
//! client costs little and Envoy's own CPU is what the benchmark sees.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `127.0.0.1:port` with Nagle off.
    pub fn open(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(128 * 1024),
        })
    }

    /// Sends one request and reads its whole response; returns the status.
    pub fn roundtrip(&mut self, request: &[u8]) -> io::Result<u16> {
        self.stream.write_all(request)?;
        let head_end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        let chunked =
            header_value(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        self.buf.drain(..head_end);
        if chunked {
            self.skip_chunked()?;
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < length {
                self.fill()?;
            }
            self.buf.drain(..length);
        }
        Ok(status)
    }

    fn skip_chunked(&mut self) -> io::Result<()> {
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buf, b"\r\n") {
                    break end;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            let needed = line_end + 2 + size + 2;
            while self.buf.len() < needed {
                self.fill()?;
            }
            self.buf.drain(..needed);
            if size == 0 {
                return Ok(());
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// Requests cycled by every connection; index `i` of the whole run uses `requests[i % len]`.
pub type Requests = Arc<Vec<Vec<u8>>>;

/// Result of a closed-loop run.
pub struct ClosedLoop {
    /// Requests whose status was not the expected one.
    pub unexpected: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Sends `total` requests over `connections` keep-alive connections as fast as Envoy answers.
pub fn closed_loop(
    port: u16,
    requests: &Requests,
    total: usize,
    connections: usize,
    expect: u16,
) -> ClosedLoop {
    let started = Instant::now();
    let per_conn = total.div_ceil(connections);
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let requests = Arc::clone(requests);
            std::thread::spawn(move || {
                // Connection c sends requests c, c + connections, ...: exactly `total` in all.
                let mine: Vec<usize> = (c..total).step_by(connections).collect();
                let Ok(mut conn) = Conn::open(port) else {
                    return mine.len();
                };
                let mut unexpected = 0;
                for (sent, index) in mine.iter().enumerate() {
                    match conn.roundtrip(&requests[index % requests.len()]) {
                        Ok(status) if status == expect => {}
                        Ok(_) => unexpected += 1,
                        Err(_) => {
                            unexpected += 1;
                            match Conn::open(port) {
                                Ok(fresh) => conn = fresh,
                                Err(_) => return unexpected + mine.len() - sent - 1,
                            }
                        }
                    }
                }
                unexpected
            })
        })
        .collect();
    let unexpected = handles
        .into_iter()
        .map(|h| h.join().unwrap_or(per_conn))
        .sum();
    ClosedLoop {
        unexpected,
        elapsed: started.elapsed(),
    }
}

/// Sends at a fixed total rate (open loop) and returns each request's latency measured from its
/// scheduled send time, so a slow response cannot hide the queueing it causes. Requests are
/// taken from index `first` on, so runs that need unique requests do not reuse the closed loop's.
pub fn open_loop(
    port: u16,
    requests: &Requests,
    first: usize,
    rate: u32,
    duration: Duration,
    connections: usize,
) -> Vec<Duration> {
    let per_conn_rate = f64::from(rate) / connections as f64;
    let interval = Duration::from_secs_f64(1.0 / per_conn_rate);
    let count = (duration.as_secs_f64() * per_conn_rate) as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let requests = Arc::clone(requests);
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(count);
                let Ok(mut conn) = Conn::open(port) else {
                    return latencies;
                };
                // Stagger connections evenly inside one interval.
                let offset = interval.mul_f64(c as f64 / connections as f64);
                for i in 0..count {
                    let scheduled = start + offset + interval * i as u32;
                    if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let request = &requests[(first + c * count + i) % requests.len()];
                    if conn.roundtrip(request).is_ok() {
                        latencies.push(scheduled.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    all.sort();
    all
}

/// The `q` quantile (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Renders a raw HTTP/1.1 request.
pub fn render_request(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: bench.local\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}
