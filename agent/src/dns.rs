//! A bounded reader of DNS messages in UDP datagrams (RFC 1035 wire format), for the packets
//! the kernel hands up: a target's queries and the answers to them. Pure; never sends.
//!
//! Every input is hostile (anyone who can reach a target's UDP port can send one), so the
//! reader is built to its bounds rather than to the header's word:
//! - nothing is allocated: names are decoded into fixed 253-byte buffers on the stack, the
//!   answer section is walked in place, and [`Message::addresses`] is a lazy iterator. A
//!   counting allocator checks that in the tests (`proptests.rs`, 100,000+ cases);
//! - a count larger than the packet is harmless: each record is bounds-checked before it is
//!   used, and a record that does not fit makes the whole message invalid;
//! - a compression pointer must point before itself and at most 127 are followed per name,
//!   and a name stops at 255 wire bytes, so loops end; label types other than plain labels
//!   and pointers (the obsolete `0x40`/`0x80` forms, which would also allow lengths over 63)
//!   are refused;
//! - names are kept only when every byte is printable ASCII other than the dot, lowercased.
//!
//! simple-dns (used before) preallocates a `Vec` per section from the header's counts
//! (65,535 records from a 12-byte packet), which is why this small reader exists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest name as text (255 wire bytes: lengths, labels and the root).
pub const MAX_NAME_TEXT: usize = 253;
const MAX_NAME_WIRE: usize = 255;
/// Compression pointers followed per name.
const MAX_HOPS: usize = 127;
/// Longest CNAME chain followed from the question's name.
const MAX_CHAIN: usize = 8;
/// IPv6 extension headers walked before giving up.
const MAX_EXT_HEADERS: usize = 8;

/// Record types and class used.
pub const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
/// `AAAA`.
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// A domain name as text: lowercase printable ASCII labels joined by dots, no trailing dot.
/// Fixed size, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    text: [u8; MAX_NAME_TEXT],
}

impl Name {
    const EMPTY: Self = Self {
        len: 0,
        text: [0; MAX_NAME_TEXT],
    };

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        let dot = usize::from(self.len > 0);
        let start = usize::from(self.len) + dot;
        let end = start.checked_add(label.len())?;
        if end > MAX_NAME_TEXT {
            return None;
        }
        if dot == 1 {
            self.text[start - 1] = b'.';
        }
        for (d, &b) in self.text[start..end].iter_mut().zip(label) {
            if !(0x21..=0x7e).contains(&b) || b == b'.' {
                return None;
            }
            *d = b.to_ascii_lowercase();
        }
        self.len = u8::try_from(end).ok()?;
        Some(())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The name at `at` in `msg` and the offset just after it (where the name's own bytes end,
/// before any pointer target). None when it is malformed (see the module's bounds).
pub fn read_name(msg: &[u8], at: usize) -> Option<(Name, usize)> {
    let mut name = Name::EMPTY;
    let (mut pos, mut next, mut hops, mut wire) = (at, None, 0, 0);
    loop {
        let len = *msg.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Some((name, next.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                wire += 1 + len;
                // Room for the root's zero byte.
                if wire + 1 > MAX_NAME_WIRE {
                    return None;
                }
                name.push_label(msg.get(pos + 1..pos + 1 + len)?)?;
                pos += 1 + len;
            }
            0xc0 => {
                let target = (usize::from(len & 0x3f) << 8) | usize::from(*msg.get(pos + 1)?);
                next.get_or_insert(pos + 2);
                hops += 1;
                if target >= pos || hops > MAX_HOPS {
                    return None;
                }
                pos = target;
            }
            _ => return None,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A UDP datagram, from an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The UDP payload (cut to the UDP and IP lengths and to what was handed up).
    pub payload: &'a [u8],
}

/// The UDP datagram in IP packet `p` (IPv4, or IPv6 through its extension headers); None for
/// anything else, for a fragment, or when a header does not fit.
pub fn udp(p: &[u8]) -> Option<Datagram<'_>> {
    let (src, dst, l4, end) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let flags_frag = u16_at(p, 6)?;
            if ihl < 20 || *p.get(9)? != 17 || flags_frag & 0x3fff != 0 {
                return None;
            }
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            let end = usize::from(u16_at(p, 2)?).min(p.len());
            (
                Ipv4Addr::from(src).into(),
                Ipv4Addr::from(dst).into(),
                ihl,
                end,
            )
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let end = match usize::from(u16_at(p, 4)?) {
                0 => p.len(), // a jumbogram: its length is in an option
                n => (40 + n).min(p.len()),
            };
            let l4 = ipv6_udp_offset(p, *p.get(6)?)?;
            (
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                l4,
                end,
            )
        }
        _ => return None,
    };
    let ulen = usize::from(u16_at(p, l4 + 4)?);
    if ulen < 8 || l4 + 8 > end {
        return None;
    }
    Some(Datagram {
        src,
        dst,
        src_port: u16_at(p, l4)?,
        dst_port: u16_at(p, l4 + 2)?,
        payload: p.get(l4 + 8..(l4 + ulen).min(end))?,
    })
}

/// Offset of the UDP header after IPv6 header `p`'s extension headers (hop-by-hop, routing,
/// destination options, an unfragmented fragment header, AH), at most `MAX_EXT_HEADERS`.
fn ipv6_udp_offset(p: &[u8], first: u8) -> Option<usize> {
    let (mut next, mut off) = (first, 40usize);
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match next {
            17 => return Some(off),
            0 | 43 | 60 => (usize::from(*p.get(off + 1)?) + 1) * 8,
            44 => {
                if u16_at(p, off + 2)? & 0xfff9 != 0 {
                    return None; // a fragment
                }
                8
            }
            51 => (usize::from(*p.get(off + 1)?) + 2) * 4,
            _ => return None,
        };
        next = *p.get(off)?;
        off = off.checked_add(len)?;
    }
    None
}

/// A DNS message with exactly one question; its answer section is walked in place.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Transaction ID.
    pub id: u16,
    /// A response (QR set); else a query.
    pub response: bool,
    /// The response code (0: no error).
    pub rcode: u8,
    /// The question's name.
    pub qname: Name,
    /// The question's type.
    pub qtype: u16,
    msg: &'a [u8],
    answers_at: usize,
    ancount: u16,
}

/// One resource record, located in the message.
#[derive(Debug, Clone, Copy)]
struct Record {
    owner_at: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata_at: usize,
    rdlen: usize,
}

/// The record at `at` and the offset after it.
fn record_at(msg: &[u8], at: usize) -> Option<(Record, usize)> {
    let (_, after) = read_name(msg, at)?;
    let rdlen = usize::from(u16_at(msg, after + 8)?);
    let rdata_at = after + 10;
    msg.get(rdata_at..rdata_at.checked_add(rdlen)?)?;
    Some((
        Record {
            owner_at: at,
            rtype: u16_at(msg, after)?,
            class: u16_at(msg, after + 2)?,
            ttl: u32_at(msg, after + 4)?,
            rdata_at,
            rdlen,
        },
        rdata_at + rdlen,
    ))
}

impl<'a> Message<'a> {
    /// The message in UDP payload `msg`: a standard query or response with one question
    /// (class IN) and, for a response, an answer section whose every record fits. None
    /// otherwise.
    pub fn parse(msg: &'a [u8]) -> Option<Self> {
        let flags = u16_at(msg, 2)?;
        let opcode = (flags >> 11) & 0x0f;
        if opcode != 0 || u16_at(msg, 4)? != 1 {
            return None;
        }
        let (qname, after) = read_name(msg, 12)?;
        if qname.len == 0 || u16_at(msg, after + 2)? != CLASS_IN {
            return None;
        }
        let response = flags & 0x8000 != 0;
        let ancount = if response { u16_at(msg, 6)? } else { 0 };
        let answers_at = after + 4;
        let mut at = answers_at;
        for _ in 0..ancount {
            at = record_at(msg, at)?.1;
        }
        Some(Self {
            id: u16_at(msg, 0)?,
            response,
            rcode: (flags & 0x0f) as u8,
            qname,
            qtype: u16_at(msg, after)?,
            msg,
            answers_at,
            ancount,
        })
    }

    /// The answer section's records (all checked in `parse`).
    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut at = self.answers_at;
        (0..self.ancount).map_while(move |_| {
            let (r, next) = record_at(self.msg, at)?;
            at = next;
            Some(r)
        })
    }

    /// (address, TTL) of each A and AAAA record (class IN) for the question's name, or for a
    /// name it leads to through the answer's CNAME records (at most 8 deep): what the name
    /// the target asked for resolved to. Records for other names are not trusted.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        let mut chain = [Name::EMPTY; MAX_CHAIN];
        chain[0] = self.qname;
        let mut n = 1;
        while n < MAX_CHAIN {
            let last = chain[n - 1];
            let next = self.records().find_map(|r| {
                (r.rtype == TYPE_CNAME && r.class == CLASS_IN && self.owner_is(&r, &last))
                    .then(|| read_name(self.msg, r.rdata_at).map(|(t, _)| t))
                    .flatten()
            });
            match next {
                Some(t) if !chain[..n].contains(&t) => {
                    chain[n] = t;
                    n += 1;
                }
                _ => break,
            }
        }
        self.records().filter_map(move |r| {
            if r.class != CLASS_IN || !chain[..n].iter().any(|c| self.owner_is(&r, c)) {
                return None;
            }
            let rdata = self.msg.get(r.rdata_at..r.rdata_at + r.rdlen)?;
            let addr: IpAddr = match (r.rtype, rdata.len()) {
                (TYPE_A, 4) => Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?).into(),
                (TYPE_AAAA, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?).into(),
                _ => return None,
            };
            Some((addr, r.ttl))
        })
    }

    fn owner_is(&self, r: &Record, name: &Name) -> bool {
        read_name(self.msg, r.owner_at).is_some_and(|(o, _)| o == *name)
    }
}

#[cfg(test)]
pub(crate) mod wire {
    //! DNS messages built by hand for tests (queries and answers, with compression).

    /// A DNS message: header, one question, then `answers` (each: owner bytes, type, TTL,
    /// rdata). The owner `[0xc0, 12]` points at the question's name.
    pub fn message(
        id: u16,
        response: bool,
        qname: &str,
        qtype: u16,
        answers: &[(Vec<u8>, u16, u32, Vec<u8>)],
    ) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&(if response { 0x8180u16 } else { 0x0100 }).to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&labels(qname));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        for (owner, rtype, ttl, rdata) in answers {
            m.extend_from_slice(owner);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    /// `name` as wire labels with the root.
    pub fn labels(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for l in name.split('.').filter(|l| !l.is_empty()) {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
        out
    }

    /// `payload` in a UDP datagram in an IPv4 packet from `src`:`sport` to `dst`:`dport`.
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = (28 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// `payload` in UDP in IPv6, after `ext` (a chain of (next header, header bytes)).
    pub fn ipv6(
        src: [u8; 16],
        dst: [u8; 16],
        sport: u16,
        dport: u16,
        ext: &[(u8, Vec<u8>)],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut exts = Vec::new();
        let first = ext.first().map_or(17, |e| e.0);
        for (i, (_, bytes)) in ext.iter().enumerate() {
            let mut h = bytes.clone();
            h[0] = ext.get(i + 1).map_or(17, |e| e.0);
            exts.extend_from_slice(&h);
        }
        let plen = (exts.len() + 8 + payload.len()) as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&plen.to_be_bytes());
        p.push(first);
        p.push(64);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&exts);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::{wire::*, *};

    fn a(owner: Vec<u8>, ttl: u32, addr: [u8; 4]) -> (Vec<u8>, u16, u32, Vec<u8>) {
        (owner, TYPE_A, ttl, addr.to_vec())
    }

    #[test]
    fn answers_for_the_asked_name_and_its_cname_chain_only() {
        let m = message(
            7,
            true,
            "WWW.Example.com",
            TYPE_A,
            &[
                // www.example.com CNAME edge.cdn.test (the target written in full)
                (vec![0xc0, 12], TYPE_CNAME, 60, labels("edge.cdn.test")),
                a(labels("edge.cdn.test"), 30, [10, 0, 0, 1]),
                a(vec![0xc0, 12], 300, [10, 0, 0, 2]),
                // A record for another name: not trusted.
                a(labels("evil.example"), 300, [10, 0, 0, 66]),
                // AAAA with a wrong length: skipped.
                (vec![0xc0, 12], TYPE_AAAA, 5, vec![1, 2, 3]),
            ],
        );
        let msg = Message::parse(&m).expect("parses");
        assert_eq!((msg.id, msg.response, msg.qtype), (7, true, TYPE_A));
        assert_eq!(msg.qname.as_str(), "www.example.com");
        let got: Vec<(IpAddr, u32)> = msg.addresses().collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1".parse().unwrap(), 30),
                ("10.0.0.2".parse().unwrap(), 300)
            ]
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let ok = message(
            1,
            true,
            "x.test",
            TYPE_A,
            &[a(vec![0xc0, 12], 5, [1, 2, 3, 4])],
        );
        assert!(Message::parse(&ok).is_some());
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut more_answers = ok.clone();
        more_answers[7] = 9;
        cases.push(("count larger than the packet", more_answers));
        let mut lp = ok.clone();
        let end = lp.len();
        lp[end - 16] = 0xc0;
        lp[end - 15] = 0xff;
        cases.push(("pointer past itself", lp));
        let mut selfp = message(1, true, "x.test", TYPE_A, &[]);
        selfp.truncate(12);
        selfp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        cases.push(("pointer to itself", selfp));
        let mut long = message(1, false, "x.test", TYPE_A, &[]);
        long.truncate(12);
        long.push(64);
        long.extend_from_slice(&[b'a'; 64]);
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        cases.push(("label of 64 bytes", long));
        let big = ["a".repeat(63).as_str(); 5].join(".");
        cases.push(("name over 255", message(1, false, &big, TYPE_A, &[])));
        cases.push((
            "control byte in a name",
            message(1, false, "a\u{1b}b.test", TYPE_A, &[]),
        ));
        let mut two = ok.clone();
        two[5] = 2;
        cases.push(("two questions", two));
        cases.push(("truncated header", ok[..11].to_vec()));
        for (what, m) in cases {
            assert!(Message::parse(&m).is_none(), "{what}");
        }
        // A name of exactly 253 characters (255 wire bytes) is kept.
        let max = [
            "a".repeat(63).as_str(),
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(max.len(), MAX_NAME_TEXT);
        let m = message(1, false, &max, TYPE_A, &[]);
        assert_eq!(Message::parse(&m).expect("253").qname.as_str(), max);
    }

    #[test]
    fn udp_through_ipv4_and_ipv6_extension_headers() {
        let q = message(9, false, "db.test", TYPE_AAAA, &[]);
        let p4 = ipv4([10, 0, 0, 1], [10, 0, 0, 53], 40000, 53, &q);
        let d = udp(&p4).expect("ipv4");
        assert_eq!((d.src_port, d.dst_port, d.payload), (40000, 53, &q[..]));
        let mut frag = p4.clone();
        frag[6] = 0x20; // more fragments
        assert!(udp(&frag).is_none());

        let hop = vec![0, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, 8 bytes (PadN)
        let dst_opts = vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // 16 bytes
        let frag_hdr = vec![0, 0, 0, 0, 0, 0, 0, 1]; // offset 0, no more fragments
        let p6 = ipv6(
            [0xfd; 16],
            [0xfe; 16],
            53,
            40000,
            &[(0, hop), (60, dst_opts), (44, frag_hdr)],
            &q,
        );
        let d = udp(&p6).expect("ipv6 with extension headers");
        assert_eq!((d.src_port, d.payload), (53, &q[..]));
        assert_eq!(d.src, IpAddr::from([0xfd; 16]));
        // A real fragment, an unknown next header, a chain past the end: none.
        let p6f = ipv6(
            [1; 16],
            [2; 16],
            53,
            1,
            &[(44, vec![0, 0, 0, 9, 0, 0, 0, 1])],
            &q,
        );
        assert!(udp(&p6f).is_none());
        let mut p6x = ipv6([1; 16], [2; 16], 53, 1, &[], &q);
        p6x[6] = 59; // no next header
        assert!(udp(&p6x).is_none());
        let p6long = ipv6(
            [1; 16],
            [2; 16],
            53,
            1,
            &[(60, {
                let mut h = vec![0; 8];
                h[1] = 200; // claims 1,608 bytes
                h
            })],
            &q,
        );
        assert!(udp(&p6long).is_none());
    }
}
