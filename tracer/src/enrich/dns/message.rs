//! A captured DNS payload as the tracer reads it: the question of a query, or the question
//! and the address records of a response. Pure; parsed with hickory-proto; every output is
//! bounded (a name's bytes, a chain's length, a TTL).
use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType},
    rr::RData,
};

/// The longest TTL an answer is believed for: one day. A forged or misconfigured answer of
/// `4294967295` s would otherwise name an address for 136 years.
pub const MAX_TTL_S: u32 = 86_400;
/// The most canonical names kept from one answer's CNAME chain (resolvers follow at most 8 to
/// 16): the `dns` evidence of a record stays small whatever the answer holds.
pub const MAX_CHAIN: usize = 8;
/// The longest name kept, in bytes of its text form (a name is at most 255 bytes on the wire;
/// escaped, up to four times that).
pub const MAX_NAME: usize = 1024;

/// Why a captured packet gave no question or answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a DNS message: {0}")]
    Malformed(String),
    #[error("a DNS query where a response was expected")]
    NotResponse,
    #[error("a DNS response where a query was expected")]
    NotQuery,
    #[error("no question in the message")]
    NoQuestion,
    #[error("a name longer than {MAX_NAME} bytes")]
    NameTooLong,
}

/// A message's first question: the name (lower case, no trailing dot), type and class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

impl Question {
    /// Bytes it holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.name.capacity()
    }
}

/// What a response says: its question, the CNAME chain (at most `MAX_CHAIN`), and each address
/// record with its TTL (at most `MAX_TTL_S`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub question: Question,
    pub chain: Vec<String>,
    pub addresses: Vec<(IpAddr, u32)>,
}

/// The DNS message of a payload (`tcp`: after the 2-byte length prefix).
fn message(payload: &[u8], tcp: bool) -> Result<Message, ParseError> {
    let message = if tcp {
        payload.get(2..).unwrap_or_default()
    } else {
        payload
    };
    Message::from_vec(message).map_err(|e| ParseError::Malformed(e.to_string()))
}

/// A name in its text form, lower case, without the trailing dot; bounded.
fn name(n: &hickory_proto::rr::Name) -> Result<String, ParseError> {
    let text = n.to_utf8();
    let text = text.trim_end_matches('.');
    if text.len() > MAX_NAME {
        return Err(ParseError::NameTooLong);
    }
    Ok(text.to_ascii_lowercase())
}

fn question(m: &Message) -> Result<Question, ParseError> {
    let q = m.queries.first().ok_or(ParseError::NoQuestion)?;
    Ok(Question {
        name: name(q.name())?,
        qtype: u16::from(q.query_type()),
        qclass: u16::from(q.query_class()),
    })
}

/// The id and question of a query payload.
pub fn parse_query(payload: &[u8], tcp: bool) -> Result<(u16, Question), ParseError> {
    let m = message(payload, tcp)?;
    if m.metadata.message_type != MessageType::Query {
        return Err(ParseError::NotQuery);
    }
    Ok((m.metadata.id, question(&m)?))
}

/// The id, question, chain and address records of a response payload.
pub fn parse_response(payload: &[u8], tcp: bool) -> Result<Response, ParseError> {
    let m = message(payload, tcp)?;
    if m.metadata.message_type != MessageType::Response {
        return Err(ParseError::NotResponse);
    }
    let question = question(&m)?;
    let mut chain = Vec::new();
    let mut addresses = Vec::new();
    for r in &m.answers {
        let ttl = r.ttl.min(MAX_TTL_S);
        match &r.data {
            RData::CNAME(c) if chain.len() < MAX_CHAIN => chain.push(name(&c.0)?),
            RData::A(a) => addresses.push((IpAddr::V4(a.0), ttl)),
            RData::AAAA(a) => addresses.push((IpAddr::V6(a.0), ttl)),
            _ => {}
        }
    }
    Ok(Response {
        id: m.metadata.id,
        question,
        chain,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for `api.test` A 10.53.9.9 TTL 30, as the test responder builds it.
    pub(crate) fn response() -> Vec<u8> {
        let mut m = vec![0x50, 0x6c, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03api\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04");
        m.extend_from_slice(&[10, 53, 9, 9]);
        m
    }

    #[test]
    fn a_response_gives_its_question_and_addresses_and_a_query_its_question() {
        let r = parse_response(&response(), false).unwrap();
        assert_eq!(r.id, 0x506c);
        assert_eq!(r.question.name, "api.test");
        assert_eq!((r.question.qtype, r.question.qclass), (1, 1));
        assert_eq!(r.addresses, vec![("10.53.9.9".parse().unwrap(), 30)]);
        let mut tcp = vec![0, response().len() as u8];
        tcp.extend(response());
        assert_eq!(parse_response(&tcp, true).unwrap(), r);
        let mut query = response()[..12 + 14].to_vec();
        query[2] = 0x01; // QR = 0, RD
        query[7] = 0; // no answers
        assert_eq!(
            parse_query(&query, false).unwrap(),
            (0x506c, r.question.clone())
        );
        assert_eq!(parse_response(&query, false), Err(ParseError::NotResponse));
        assert_eq!(parse_query(&response(), false), Err(ParseError::NotQuery));
    }

    #[test]
    fn ttls_are_clamped_to_a_day_and_names_lowered() {
        let mut m = response();
        let n = m.len();
        m[n - 10..n - 6].copy_from_slice(&u32::MAX.to_be_bytes());
        m[12 + 1] = b'A'; // "Api"
        let r = parse_response(&m, false).unwrap();
        assert_eq!(r.addresses[0].1, MAX_TTL_S);
        assert_eq!(r.question.name, "api.test");
    }

    #[test]
    fn a_long_cname_chain_is_kept_to_its_first_names() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 40, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        for i in 0..40u8 {
            // name: pointer to the question; CNAME → "cN" + pointer to the question
            m.extend_from_slice(b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x1e\x00\x05");
            m.extend_from_slice(&[2, b'c', b'0' + (i % 10), 0xc0, 0x0c]);
        }
        let r = parse_response(&m, false).unwrap();
        assert_eq!(r.chain.len(), MAX_CHAIN);
        assert_eq!(r.chain[0], "c0.a");
    }

    #[test]
    fn garbage_is_an_error_never_a_name() {
        assert!(parse_response(&[1, 2, 3], false).is_err());
        assert!(parse_query(&[1, 2, 3], true).is_err());
        for cut in 0..response().len() {
            let _ = parse_response(&response()[..cut], false);
            let _ = parse_query(&response()[..cut], false);
        }
    }
}
