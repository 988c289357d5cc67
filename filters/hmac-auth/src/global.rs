//! Replay memory across Envoy processes (`replay.global`): a verified delivery's replay id is sent
//! to the rate limit service (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, as
//! rate-limit's global mode speaks it: envoyproxy/ratelimit, Limitador) as one descriptor,
//! `hmac_replay_id=<fingerprint>`, with a limit of 1 per `replay.ttl` configured in the service.
//! The first sighting anywhere is `OK`; a copy at any replica is `OVER_LIMIT`. No proxy-wasm
//! import: unit-tested natively.

use wasmgate_core::rls::{
    Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, CODE_OK, CODE_OVER_LIMIT,
};
pub use wasmgate_core::rls::{METHOD, SERVICE};

/// The descriptor key the service's limit must count by.
pub const DESCRIPTOR_KEY: &str = "hmac_replay_id";

/// The serialized request for a replay fingerprint.
pub fn request(domain: &str, fingerprint: &[u8]) -> Vec<u8> {
    prost::Message::encode_to_vec(&RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: DESCRIPTOR_KEY.into(),
                value: hex::encode(fingerprint),
            }],
        }],
        hits_addend: 1,
    })
}

/// What the service said about a replay id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First sighting within the ttl.
    First,
    /// Seen before, at this or another replica.
    Again,
    /// No usable answer (an error status, a timeout, an unknown code).
    Unknown,
}

/// Reads the service's answer (`status` is the gRPC status; 0 carries `message`).
pub fn seen(status: u32, message: &[u8]) -> Seen {
    if status != 0 {
        return Seen::Unknown;
    }
    match <RateLimitResponse as prost::Message>::decode(message) {
        Ok(r) if r.overall_code == CODE_OK => Seen::First,
        Ok(r) if r.overall_code == CODE_OVER_LIMIT => Seen::Again,
        _ => Seen::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_answers() {
        let bytes = request("webhooks", &[0xab, 0xcd]);
        let decoded = <RateLimitRequest as prost::Message>::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.domain, "webhooks");
        assert_eq!(decoded.hits_addend, 1);
        assert_eq!(decoded.descriptors[0].entries[0].key, "hmac_replay_id");
        assert_eq!(decoded.descriptors[0].entries[0].value, "abcd");
        let answer = |code| {
            prost::Message::encode_to_vec(&RateLimitResponse {
                overall_code: code,
                ..Default::default()
            })
        };
        assert_eq!(seen(0, &answer(1)), Seen::First);
        assert_eq!(seen(0, &answer(2)), Seen::Again);
        assert_eq!(seen(0, &answer(0)), Seen::Unknown);
        assert_eq!(seen(14, &answer(1)), Seen::Unknown);
        assert_eq!(seen(0, b"\xff\xff garbage"), Seen::Unknown);
    }
}
