//! Filter mode's own attempts, as values: the request every attempt replays, the job that counts
//! attempts against a deadline, one attempt's answer, and the final answer to the client.

use crate::config::ATTEMPT_MARKER;
use crate::policy::{self, Outcome as AttemptOutcome};
use std::time::{Duration, SystemTime};
use wasmgate_core::outcome::parse_status;
use wasmgate_core::{Answer, Callout, LocalReply, Outcome, Response};

/// The request as every attempt the filter sends replays it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    trailers: Vec<(String, String)>,
}

impl Replay {
    /// The client's request: its headers (pseudo-headers included) without the framing headers
    /// the host sets itself for each attempt, its body (none when empty) and its trailers.
    pub fn new(
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
    ) -> Self {
        let headers = headers
            .into_iter()
            .filter(|(n, _)| n != "transfer-encoding" && n != "content-length")
            .collect();
        Self {
            headers,
            body: (!body.is_empty()).then_some(body),
            trailers,
        }
    }
}

/// One buffered request in filter mode: what it replays and how many attempts it made and may
/// make before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    replay: Replay,
    /// Attempts sent so far (the router's first attempt of a request with a body included).
    pub attempts: u32,
    /// Retries this request may make.
    pub max_retries: u32,
    /// When `filter_mode.timeout` ends for this request, in Unix milliseconds.
    pub deadline_ms: u64,
}

impl Job {
    /// A job that has made `attempts` attempts already; its `timeout` starts at `now_ms`.
    pub fn new(
        replay: Replay,
        attempts: u32,
        max_retries: u32,
        timeout: Duration,
        now_ms: u64,
    ) -> Self {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Self {
            replay,
            attempts,
            max_retries,
            deadline_ms: now_ms.saturating_add(timeout_ms),
        }
    }

    /// Milliseconds left before the deadline.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline_ms.saturating_sub(now_ms)
    }

    /// Counts one more attempt and returns the callout that sends it to `loopback_cluster`,
    /// marked with [`ATTEMPT_MARKER`] (the configuration's `token`) and with the router's own
    /// retries off, so the listener it re-enters routes it once.
    pub fn next_attempt(
        &mut self,
        loopback_cluster: &str,
        token: &str,
        per_try_timeout: Option<Duration>,
        now_ms: u64,
    ) -> Callout {
        self.attempts += 1;
        let mut headers: Vec<(String, String)> = self
            .replay
            .headers
            .iter()
            .filter(|(n, _)| n != ATTEMPT_MARKER && n != "x-envoy-max-retries")
            .cloned()
            .collect();
        headers.push((ATTEMPT_MARKER.into(), token.to_string()));
        headers.push(("x-envoy-max-retries".into(), "0".into()));
        Callout::Http {
            cluster: loopback_cluster.to_string(),
            headers,
            body: self.replay.body.clone(),
            trailers: self.replay.trailers.clone(),
            timeout: policy::attempt_timeout(per_try_timeout, self.remaining_ms(now_ms)),
        }
    }
}

/// An upstream response to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Envoy's own answer for "no upstream response" (timeout, connect failure, reset).
    pub no_response: bool,
    /// The status (502 when the answer had no valid `:status`).
    pub status: u16,
    /// The response headers, `:status` included.
    pub headers: Vec<(String, String)>,
    /// The response body (empty for the router's first attempt: it is not read).
    pub body: Vec<u8>,
}

fn status_of(headers: &[(String, String)]) -> u16 {
    let status = headers.iter().find(|(n, _)| n == ":status");
    parse_status(status.map(|(_, v)| v.as_str())).unwrap_or(502)
}

impl Attempt {
    /// The answer to an attempt the filter sent; `None` when nothing answered (no headers, the
    /// host refused to send it, or an answer that is not HTTP).
    pub fn from_answer(answer: Answer) -> Option<Self> {
        let Answer::Http { headers, body } = answer else {
            return None;
        };
        if headers.is_empty() {
            return None;
        }
        let status = status_of(&headers);
        Some(Self {
            no_response: policy::is_envoy_no_response(status, &body),
            status,
            headers,
            body,
        })
    }

    /// The router's response to the first attempt of a request with a body, with its
    /// `response.code_details` attribute.
    pub fn from_router(headers: Vec<(String, String)>, code_details: Option<&[u8]>) -> Self {
        Self {
            no_response: policy::is_router_no_response(code_details),
            status: status_of(&headers),
            headers,
            body: Vec::new(),
        }
    }

    /// What the retry policy sees of an attempt (`None`: nothing answered): its status, and its
    /// `grpc-status` when the headers carry one.
    pub fn outcome(attempt: Option<&Self>) -> AttemptOutcome {
        match attempt {
            Some(a) if !a.no_response => match a.header("grpc-status").map(str::trim) {
                Some(g) => match g.parse() {
                    Ok(grpc) => AttemptOutcome::Grpc(a.status, grpc),
                    Err(_) => AttemptOutcome::Status(a.status),
                },
                None => AttemptOutcome::Status(a.status),
            },
            _ => AttemptOutcome::NoResponse,
        }
    }

    /// The response header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The wait the response asks for (`Retry-After`, `RateLimit`, `X-RateLimit-Reset`).
    pub fn asked_wait(&self, now: SystemTime) -> Option<Duration> {
        policy::asked_wait(|name| self.header(name), now)
    }
}

/// Response headers that are not passed on from an attempt: pseudo-headers and framing and
/// connection headers, which the host sets for the client's own connection.
fn is_passed_on(name: &str) -> bool {
    !name.starts_with(':')
        && !matches!(
            name,
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        )
}

/// The client's answer after the last attempt: that attempt's status, headers and body, or
/// `503 upstream_unavailable` when nothing answered; `attempts_header` reports the attempts
/// when there was more than one.
pub fn final_answer(last: Option<Attempt>, attempts: u32, attempts_header: &str) -> Outcome {
    let count = (attempts > 1).then(|| (attempts_header.to_string(), attempts.to_string()));
    let Some(last) = last else {
        let reply = LocalReply::new(
            503,
            "upstream_unavailable",
            "The upstream did not answer any attempt.",
        );
        return Outcome::Reply(match count {
            Some((name, value)) => reply.with_header(name, value),
            None => reply,
        });
    };
    let headers = last
        .headers
        .into_iter()
        .filter(|(n, _)| is_passed_on(n))
        .chain(count)
        .collect();
    Outcome::Respond(Response {
        status: u32::from(last.status),
        headers,
        body: last.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn http(list: &[(&str, &str)], body: &[u8]) -> Answer {
        Answer::Http {
            headers: pairs(list),
            body: body.to_vec(),
        }
    }

    #[test]
    fn replay_drops_framing_headers_and_an_empty_body() {
        let headers = pairs(&[
            (":method", "PUT"),
            ("content-length", "7"),
            ("transfer-encoding", "chunked"),
            ("x-a", "1"),
            ("x-envoy-max-retries", "3"),
            (ATTEMPT_MARKER, "9"),
        ]);
        let mut job = Job::new(
            Replay::new(headers, b"payload".to_vec(), vec![]),
            0,
            2,
            Duration::from_secs(5),
            1000,
        );
        let Callout::Http { headers, body, .. } = job.next_attempt("c", "t0k", None, 1000) else {
            panic!("an HTTP callout");
        };
        assert_eq!(
            headers,
            pairs(&[
                (":method", "PUT"),
                ("x-a", "1"),
                (ATTEMPT_MARKER, "t0k"),
                ("x-envoy-max-retries", "0")
            ])
        );
        assert_eq!(body.as_deref(), Some(&b"payload"[..]));
        assert_eq!(Replay::new(vec![], vec![], vec![]).body, None);
    }

    #[test]
    fn each_attempt_counts_and_stops_at_the_deadline() {
        let trailers = pairs(&[("grpc-status", "0")]);
        let replay = Replay::new(pairs(&[(":path", "/")]), vec![], trailers.clone());
        let mut job = Job::new(replay, 1, 2, Duration::from_millis(500), 10_000);
        assert_eq!(job.deadline_ms, 10_500);
        let per_try = Some(Duration::from_millis(200));
        let first = job.next_attempt("backend", "t0k", per_try, 10_000);
        assert_eq!(job.attempts, 2);
        assert_eq!(
            first,
            Callout::Http {
                cluster: "backend".into(),
                headers: pairs(&[
                    (":path", "/"),
                    (ATTEMPT_MARKER, "t0k"),
                    ("x-envoy-max-retries", "0")
                ]),
                body: None,
                trailers,
                timeout: Duration::from_millis(200),
            }
        );
        let Callout::Http { timeout, .. } = job.next_attempt("backend", "t0k", per_try, 10_400)
        else {
            panic!("an HTTP callout");
        };
        assert_eq!(
            timeout,
            Duration::from_millis(100),
            "what is left of the deadline"
        );
        assert_eq!(job.attempts, 3);
        assert_eq!(job.remaining_ms(11_000), 0);
    }

    #[test]
    fn answers_become_attempts() {
        assert_eq!(
            Attempt::from_answer(http(&[], b"")),
            None,
            "no headers: no response"
        );
        assert_eq!(
            Attempt::from_answer(Answer::NotSent("refused".into())),
            None
        );
        let a = Attempt::from_answer(http(&[(":status", "503"), ("Retry-After", "2")], b"x"));
        let a = a.unwrap();
        assert_eq!((a.status, a.no_response), (503, false));
        assert_eq!(a.header("retry-after"), Some("2"));
        assert_eq!(
            a.asked_wait(SystemTime::UNIX_EPOCH),
            Some(Duration::from_secs(2))
        );
        assert_eq!(Attempt::outcome(Some(&a)), AttemptOutcome::Status(503));
        let timeout = http(&[(":status", "504")], b"upstream request timeout");
        let timeout = Attempt::from_answer(timeout).unwrap();
        assert!(timeout.no_response);
        assert_eq!(Attempt::outcome(Some(&timeout)), AttemptOutcome::NoResponse);
        assert_eq!(Attempt::outcome(None), AttemptOutcome::NoResponse);
        let grpc = http(&[(":status", "200"), ("grpc-status", "14")], b"");
        let grpc = Attempt::from_answer(grpc).unwrap();
        assert_eq!(Attempt::outcome(Some(&grpc)), AttemptOutcome::Grpc(200, 14));
        let bad = http(&[(":status", "200"), ("grpc-status", "x")], b"");
        let bad = Attempt::from_answer(bad).unwrap();
        assert_eq!(Attempt::outcome(Some(&bad)), AttemptOutcome::Status(200));
        let odd = Attempt::from_answer(http(&[("x", "y")], b"")).unwrap();
        assert_eq!(odd.status, 502, "no :status");
        assert_eq!(odd.asked_wait(SystemTime::UNIX_EPOCH), None);
    }

    #[test]
    fn router_responses_become_attempts() {
        let headers = pairs(&[(":status", "504")]);
        let cut = Attempt::from_router(headers.clone(), Some(b"upstream_per_try_timeout"));
        assert!(cut.no_response);
        let passed = Attempt::from_router(headers, Some(b"via_upstream"));
        assert_eq!((passed.status, passed.no_response), (504, false));
    }

    #[test]
    fn final_answer_passes_the_last_response_on() {
        let last = Attempt::from_answer(http(
            &[
                (":status", "200"),
                ("content-length", "5"),
                ("connection", "close"),
                ("keep-alive", "x"),
                ("transfer-encoding", "chunked"),
                ("x-upstream", "final"),
            ],
            b"third",
        ));
        let Outcome::Respond(response) = final_answer(last.clone(), 3, "x-attempts") else {
            panic!("a response");
        };
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"third");
        assert_eq!(
            response.headers,
            pairs(&[("x-upstream", "final"), ("x-attempts", "3")])
        );
        let Outcome::Respond(single) = final_answer(last, 1, "x-attempts") else {
            panic!("a response");
        };
        assert_eq!(single.headers, pairs(&[("x-upstream", "final")]));
    }

    #[test]
    fn final_answer_without_any_response_is_503() {
        let Outcome::Reply(reply) = final_answer(None, 2, "x-attempts") else {
            panic!("a reply");
        };
        assert_eq!(
            (reply.status, reply.error.as_str()),
            (503, "upstream_unavailable")
        );
        assert_eq!(reply.headers, pairs(&[("x-attempts", "2")]));
        let Outcome::Reply(reply) = final_answer(None, 1, "x-attempts") else {
            panic!("a reply");
        };
        assert!(reply.headers.is_empty());
    }
}
