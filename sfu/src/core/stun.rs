//! Just enough STUN (RFC 8489) to read the USERNAME of a binding request, so the first packet
//! from a new address can be routed by ICE ufrag before str0m authenticates it.

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// The local (receiver's) ufrag from a STUN message's `USERNAME`, which ICE writes as
/// `"<receiver ufrag>:<sender ufrag>"`. `None` for anything that is not a well-formed STUN
/// message with a USERNAME.
pub(crate) fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    let header = datagram.get(..HEADER_LEN)?;
    if header[0] & 0xC0 != 0 || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = datagram.get(HEADER_LEN..HEADER_LEN + body_len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        let padded = (len + 3) & !3;
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize((body.len() + 3) & !3, 0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn finds_the_receivers_ufrag_after_other_attributes() {
        let msg = message(&[(0x8029, b"12345678"), (ATTR_USERNAME, b"srv1:cli")]);
        assert_eq!(local_ufrag(&msg), Some("srv1"));
    }

    #[test]
    fn skips_padding_of_odd_length_attributes() {
        let msg = message(&[(0x8022, b"abc"), (ATTR_USERNAME, b"xy:z")]);
        assert_eq!(local_ufrag(&msg), Some("xy"));
    }

    #[test]
    fn rejects_non_stun_and_truncated_input() {
        let msg = message(&[(ATTR_USERNAME, b"srv1:cli")]);
        for cut in 0..msg.len() {
            assert_eq!(local_ufrag(&msg[..cut]), None, "cut at {cut}");
        }
        let mut rtp = msg.clone();
        rtp[0] = 0x80;
        assert_eq!(local_ufrag(&rtp), None);
        let mut no_cookie = msg;
        no_cookie[4] = 0;
        assert_eq!(local_ufrag(&no_cookie), None);
    }

    #[test]
    fn no_username_is_none() {
        assert_eq!(local_ufrag(&message(&[(0x8028, b"fing")])), None);
    }
}
