//! ALL_HEADERS, the prefix of SQL batch, RPC and transaction manager
//! requests from TDS 7.2 on ([MS-TDS] 2.2.5.3).
//!
//! Layout: TotalLength (4, LE, includes itself), then headers, each
//! HeaderLength (4, LE, includes itself), HeaderType (2, LE) and data.
//! Known types are decoded strictly, so re-encoding reproduces the bytes;
//! unknown types are kept as opaque data.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::tds::{DecodeError, EncodeError, Reader};

/// Header types (2.2.5.3).
pub mod header_type {
    /// 2.2.5.3.1 Query Notifications.
    pub const QUERY_NOTIFICATIONS: u16 = 0x0001;
    /// 2.2.5.3.2 Transaction Descriptor.
    pub const TRANSACTION_DESCRIPTOR: u16 = 0x0002;
    /// 2.2.5.3.3 Trace Activity.
    pub const TRACE_ACTIVITY: u16 = 0x0003;
}

/// Cap on headers in one ALL_HEADERS: three types are defined and each may
/// appear once; 16 bounds what a peer can make us build.
pub const MAX_HEADERS: usize = 16;

const STRUCTURE: &str = "ALL_HEADERS";

/// One header of ALL_HEADERS.
#[derive(Clone, PartialEq, Eq)]
pub enum Header {
    /// Query notification subscription (type 0x0001).
    QueryNotifications {
        notify_id: String,
        ssb_deployment: String,
        /// Present when the header is long enough to hold it.
        timeout: Option<u32>,
    },
    /// Current transaction (type 0x0002): descriptor from ENVCHANGE, and the
    /// number of requests outstanding on the connection (1 without MARS).
    TransactionDescriptor {
        descriptor: u64,
        outstanding_requests: u32,
    },
    /// Client activity id for tracing (type 0x0003).
    TraceActivity {
        activity_id: [u8; 16],
        sequence: u32,
    },
    /// Any other type, kept as received.
    Unknown { header_type: u16, data: Bytes },
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Header::QueryNotifications { timeout, .. } => f
                .debug_struct("QueryNotifications")
                .field("timeout", timeout)
                .finish_non_exhaustive(),
            Header::TransactionDescriptor {
                descriptor,
                outstanding_requests,
            } => f
                .debug_struct("TransactionDescriptor")
                .field("descriptor", &format_args!("{descriptor:#x}"))
                .field("outstanding_requests", outstanding_requests)
                .finish(),
            Header::TraceActivity { sequence, .. } => f
                .debug_struct("TraceActivity")
                .field("sequence", sequence)
                .finish_non_exhaustive(),
            Header::Unknown { header_type, data } => f
                .debug_struct("Unknown")
                .field("header_type", header_type)
                .field("len", &data.len())
                .finish(),
        }
    }
}

impl Header {
    /// The HeaderType value.
    pub fn header_type(&self) -> u16 {
        match self {
            Header::QueryNotifications { .. } => header_type::QUERY_NOTIFICATIONS,
            Header::TransactionDescriptor { .. } => header_type::TRANSACTION_DESCRIPTOR,
            Header::TraceActivity { .. } => header_type::TRACE_ACTIVITY,
            Header::Unknown { header_type, .. } => *header_type,
        }
    }

    fn decode(header_type: u16, data: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(data, STRUCTURE);
        let header = match header_type {
            header_type::QUERY_NOTIFICATIONS => decode_query_notifications(&mut r)?,
            header_type::TRANSACTION_DESCRIPTOR => Header::TransactionDescriptor {
                descriptor: r.u64_le()?,
                outstanding_requests: r.u32_le()?,
            },
            header_type::TRACE_ACTIVITY => Header::TraceActivity {
                activity_id: r.array()?,
                sequence: r.u32_le()?,
            },
            other => Header::Unknown {
                header_type: other,
                data: Bytes::copy_from_slice(r.bytes(data.len())?),
            },
        };
        r.finish()?;
        Ok(header)
    }

    fn encode_data(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Header::QueryNotifications {
                notify_id,
                ssb_deployment,
                timeout,
            } => {
                put_us_varchar(notify_id, out)?;
                put_us_varchar(ssb_deployment, out)?;
                if let Some(timeout) = timeout {
                    out.put_u32_le(*timeout);
                }
            }
            Header::TransactionDescriptor {
                descriptor,
                outstanding_requests,
            } => {
                out.put_u64_le(*descriptor);
                out.put_u32_le(*outstanding_requests);
            }
            Header::TraceActivity {
                activity_id,
                sequence,
            } => {
                out.extend_from_slice(activity_id);
                out.put_u32_le(*sequence);
            }
            Header::Unknown { data, .. } => out.extend_from_slice(data),
        }
        Ok(())
    }
}

fn decode_query_notifications(r: &mut Reader<'_>) -> Result<Header, DecodeError> {
    let notify_id = us_varchar(r)?;
    let ssb_deployment = us_varchar(r)?;
    let timeout = if r.is_empty() {
        None
    } else {
        Some(r.u32_le()?)
    };
    Ok(Header::QueryNotifications {
        notify_id,
        ssb_deployment,
        timeout,
    })
}

/// US_VARCHAR here: a 2-byte length in bytes, then UTF-16LE.
fn us_varchar(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = usize::from(r.u16_le()?);
    decode_utf16(r.bytes(len)?, STRUCTURE)
}

fn put_us_varchar(s: &str, out: &mut BytesMut) -> Result<(), EncodeError> {
    let bytes = encode_utf16(s);
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge {
        structure: STRUCTURE,
        field: "US_VARCHAR",
        length: bytes.len(),
        limit: usize::from(u16::MAX),
    })?;
    out.put_u16_le(len);
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Strict UTF-16LE decoding: odd lengths and unpaired surrogates are errors,
/// which makes `encode_utf16(decode_utf16(b)) == b` for every accepted `b`.
pub fn decode_utf16(bytes: &[u8], structure: &'static str) -> Result<String, DecodeError> {
    if bytes.len() % 2 != 0 {
        return Err(DecodeError::Malformed {
            structure,
            reason: "UTF-16 text has an odd byte length",
        });
    }
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| DecodeError::Malformed {
            structure,
            reason: "text is not valid UTF-16",
        })
}

/// UTF-16LE bytes of `s`.
pub fn encode_utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The ALL_HEADERS block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllHeaders {
    pub headers: Vec<Header>,
}

impl AllHeaders {
    /// Decodes ALL_HEADERS at the start of `r`, consuming exactly TotalLength.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let total = r.u32_le()? as usize;
        let body_len = total.checked_sub(4).ok_or(DecodeError::InvalidValue {
            structure: STRUCTURE,
            field: "TotalLength",
            value: total as u64,
        })?;
        let mut body = r.take(body_len, STRUCTURE)?;

        let mut headers = Vec::new();
        while !body.is_empty() {
            if headers.len() == MAX_HEADERS {
                return Err(DecodeError::TooLarge {
                    structure: STRUCTURE,
                    length: MAX_HEADERS + 1,
                    limit: MAX_HEADERS,
                });
            }
            headers.push(decode_header(&mut body)?);
        }
        Ok(AllHeaders { headers })
    }

    /// Appends the block with its TotalLength.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.headers.len() > MAX_HEADERS {
            return Err(EncodeError::TooLarge {
                structure: STRUCTURE,
                field: "header count",
                length: self.headers.len(),
                limit: MAX_HEADERS,
            });
        }
        let start = out.len();
        out.put_u32_le(0);
        for header in &self.headers {
            let header_start = out.len();
            out.put_u32_le(0);
            out.put_u16_le(header.header_type());
            header.encode_data(out)?;
            patch_len(out, header_start)?;
        }
        patch_len(out, start)
    }

    /// The transaction descriptor header, if present.
    pub fn transaction_descriptor(&self) -> Option<(u64, u32)> {
        self.headers.iter().find_map(|h| match h {
            Header::TransactionDescriptor {
                descriptor,
                outstanding_requests,
            } => Some((*descriptor, *outstanding_requests)),
            _ => None,
        })
    }

    /// Whether `payload` plausibly starts with ALL_HEADERS: TotalLength fits
    /// the payload and the headers parse to exactly that length. Used when
    /// the TDS version is unknown (clients before 7.2 send no ALL_HEADERS).
    pub fn is_present(payload: &[u8]) -> bool {
        let mut r = Reader::new(payload, STRUCTURE);
        AllHeaders::decode(&mut r).is_ok_and(|h| !h.headers.is_empty())
    }
}

fn decode_header(body: &mut Reader<'_>) -> Result<Header, DecodeError> {
    let len = body.u32_le()? as usize;
    let data_len = len.checked_sub(6).ok_or(DecodeError::InvalidValue {
        structure: STRUCTURE,
        field: "HeaderLength",
        value: len as u64,
    })?;
    let header_type = body.u16_le()?;
    let data = body.bytes(data_len)?;
    Header::decode(header_type, data)
}

/// Writes the length of everything from `start` as a LE u32 at `start`.
fn patch_len(out: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
    let len = out.len() - start;
    let len32 = u32::try_from(len).map_err(|_| EncodeError::TooLarge {
        structure: STRUCTURE,
        field: "length",
        length: len,
        limit: u32::MAX as usize,
    })?;
    out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_descriptor_round_trip() {
        // From the [MS-TDS] 4.6 example.
        let bytes = [
            0x16, 0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        ];
        let mut r = Reader::new(&bytes, "test");
        let headers = AllHeaders::decode(&mut r).unwrap();
        r.finish().unwrap();
        assert_eq!(headers.transaction_descriptor(), Some((0, 1)));
        let mut out = BytesMut::new();
        headers.encode(&mut out).unwrap();
        assert_eq!(&out[..], &bytes);
    }

    #[test]
    fn every_type_round_trips() {
        let headers = AllHeaders {
            headers: vec![
                Header::QueryNotifications {
                    notify_id: "n1".into(),
                    ssb_deployment: "svc".into(),
                    timeout: Some(30),
                },
                Header::TraceActivity {
                    activity_id: [5; 16],
                    sequence: 9,
                },
                Header::Unknown {
                    header_type: 0x7777,
                    data: Bytes::from_static(b"xyz"),
                },
            ],
        };
        let mut out = BytesMut::new();
        headers.encode(&mut out).unwrap();
        let mut r = Reader::new(&out, "test");
        assert_eq!(AllHeaders::decode(&mut r).unwrap(), headers);
        r.finish().unwrap();
        assert!(AllHeaders::is_present(&out));
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut r = Reader::new(&[0x02, 0, 0, 0], "test");
        assert!(AllHeaders::decode(&mut r).is_err());
        // Header length 5 (< 6).
        let bad = [0x0A, 0, 0, 0, 0x05, 0, 0, 0, 0x02, 0x00];
        assert!(AllHeaders::decode(&mut Reader::new(&bad, "test")).is_err());
        // Transaction descriptor too short.
        let short = [0x0C, 0, 0, 0, 0x08, 0, 0, 0, 0x02, 0x00, 0x01, 0x02];
        assert!(AllHeaders::decode(&mut Reader::new(&short, "test")).is_err());
        assert!(!AllHeaders::is_present(&encode_utf16("select 1")));
    }

    #[test]
    fn utf16_is_strict() {
        assert!(decode_utf16(&[0x41], "t").is_err());
        assert!(decode_utf16(&[0x00, 0xD8], "t").is_err());
        assert_eq!(decode_utf16(&encode_utf16("aé😀"), "t").unwrap(), "aé😀");
    }
}
