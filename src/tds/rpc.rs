//! RPC request messages, packet type 0x03 ([MS-TDS] 2.2.6.6 "RPC Request").
//!
//! ```text
//! RPCRequest   = [ALL_HEADERS] RPCReqBatch *(BatchFlag / NoExecFlag RPCReqBatch)
//!                [BatchFlag / NoExecFlag]
//! RPCReqBatch  = NameLenProcID OptionFlags *ParameterData
//! NameLenProcID = US_VARCHAR procedure name / 0xFFFF ProcID
//! ParameterData = B_VARCHAR name, StatusFlags, TYPE_INFO, value,
//!                 [ParamCipherInfo when fEncrypted]
//! ```
//!
//! The separator between calls is 0x80 before TDS 7.2 and 0xFF from TDS 7.2
//! on, which also added NoExecFlag 0xFE. A TDS 7.2+ request always carries
//! ALL_HEADERS (2.2.5.3), so 0x80 is read as a separator only in a request
//! without ALL_HEADERS; otherwise it is the length of a 128-character
//! parameter name. The separator byte actually received is kept, so a
//! decoded request re-encodes to the same bytes.
//!
//! Parameter values are kept as their wire bytes; [`RpcParam::value`] gives
//! the typed value and [`RpcParam::set_value`] replaces type and value (the
//! rewrite layer uses it to turn a plaintext parameter into varbinary).

use std::fmt;

use bytes::BytesMut;

use crate::tds::all_headers::AllHeaders;
use crate::tds::types::framing::{decode_value_raw_in, RawValue};
use crate::tds::types::value::{decode_value, encode_value_in, SqlValue};
use crate::tds::types::{read_b_varchar, read_us_varchar, write_b_varchar, TypeContext, TypeInfo};
use crate::tds::{DecodeError, EncodeError, Reader};

const STRUCTURE: &str = "RPCRequest";

/// ProcIDSwitch: NameLenProcID value announcing a ProcID.
pub const PROC_ID_SWITCH: u16 = 0xFFFF;

/// BatchFlag between RPCs before TDS 7.2.
pub const BATCH_FLAG_PRE_72: u8 = 0x80;
/// BatchFlag between RPCs from TDS 7.2 on.
pub const BATCH_FLAG: u8 = 0xFF;
/// NoExecFlag (TDS 7.2+): the next RPC is sent but not executed.
pub const NO_EXEC_FLAG: u8 = 0xFE;

/// OptionFlags bits (2.2.6.6).
pub mod option_flags {
    pub const WITH_RECOMP: u16 = 0x0001;
    pub const NO_METADATA: u16 = 0x0002;
    pub const REUSE_METADATA: u16 = 0x0004;
}

/// StatusFlags bits of a parameter (2.2.6.6).
pub mod status_flags {
    /// fByRefValue: an OUTPUT parameter.
    pub const BY_REF_VALUE: u8 = 0x01;
    /// fDefaultValue: use the parameter's default.
    pub const DEFAULT_VALUE: u8 = 0x02;
    /// fEncrypted: Always Encrypted ciphertext, followed by ParamCipherInfo.
    pub const ENCRYPTED: u8 = 0x08;
}

/// Well-known procedure ids (2.2.6.6, ProcID).
pub mod proc_id {
    pub const SP_CURSOR: u16 = 1;
    pub const SP_CURSOROPEN: u16 = 2;
    pub const SP_CURSORPREPARE: u16 = 3;
    pub const SP_CURSOREXECUTE: u16 = 4;
    pub const SP_CURSORPREPEXEC: u16 = 5;
    pub const SP_CURSORUNPREPARE: u16 = 6;
    pub const SP_CURSORFETCH: u16 = 7;
    pub const SP_CURSOROPTION: u16 = 8;
    pub const SP_CURSORCLOSE: u16 = 9;
    pub const SP_EXECUTESQL: u16 = 10;
    pub const SP_PREPARE: u16 = 11;
    pub const SP_EXECUTE: u16 = 12;
    pub const SP_PREPEXEC: u16 = 13;
    pub const SP_PREPEXECRPC: u16 = 14;
    pub const SP_UNPREPARE: u16 = 15;
}

const PROC_NAMES: [&str; 15] = [
    "sp_cursor",
    "sp_cursoropen",
    "sp_cursorprepare",
    "sp_cursorexecute",
    "sp_cursorprepexec",
    "sp_cursorunprepare",
    "sp_cursorfetch",
    "sp_cursoroption",
    "sp_cursorclose",
    "sp_executesql",
    "sp_prepare",
    "sp_execute",
    "sp_prepexec",
    "sp_prepexecrpc",
    "sp_unprepare",
];

/// Largest number of parameters accepted in one call: SQL Server allows at
/// most 2100 parameters per procedure ("Maximum capacity specifications").
pub const MAX_RPC_PARAMS: usize = 2100;

/// Largest number of calls accepted in one message. The specification sets
/// no limit; drivers batch a handful. This bounds the per-message vectors.
pub const MAX_RPC_CALLS: usize = 1024;

/// The procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcName {
    /// A well-known procedure by number (see [`proc_id`]).
    Id(u16),
    /// A procedure by name, as sent.
    Name(String),
}

impl ProcName {
    /// The well-known id this call resolves to, whether sent by id or by a
    /// name such as `sp_executesql` or `sys.sp_executesql` (any case).
    pub fn well_known_id(&self) -> Option<u16> {
        match self {
            ProcName::Id(id) => Some(*id),
            ProcName::Name(name) => {
                let last = name.rsplit('.').next().unwrap_or(name);
                let last = last.trim_matches(|c| c == '[' || c == ']');
                let i = PROC_NAMES
                    .iter()
                    .position(|p| p.eq_ignore_ascii_case(last))?;
                u16::try_from(i + 1).ok()
            }
        }
    }

    /// The name of a well-known procedure id.
    pub fn well_known_name(id: u16) -> Option<&'static str> {
        PROC_NAMES.get(usize::from(id).checked_sub(1)?).copied()
    }
}

/// ParamCipherInfo of an Always Encrypted parameter (TDS 7.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParamCipherInfo {
    /// The plaintext type.
    pub type_info: TypeInfo,
    pub encryption_algo: u8,
    /// Present when `encryption_algo` is 0 (custom algorithm).
    pub algo_name: Option<String>,
    pub encryption_type: u8,
    pub database_id: u32,
    pub cek_id: u32,
    pub cek_version: u32,
    pub cek_md_version: u64,
    pub norm_version: u8,
}

/// One parameter of an RPC call.
#[derive(Clone, PartialEq)]
pub struct RpcParam {
    /// `@name`, or empty for a positional parameter.
    pub name: String,
    pub status: u8,
    pub type_info: TypeInfo,
    /// The value exactly as on the wire, framing included.
    value_wire: Vec<u8>,
    pub cipher_info: Option<ParamCipherInfo>,
}

/// One RPC (RPCReqBatch).
#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc_name: ProcName,
    pub option_flags: u16,
    pub params: Vec<RpcParam>,
    /// The BatchFlag or NoExecFlag that followed this call, if any.
    pub separator: Option<u8>,
}

/// A whole RPC request message payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    pub all_headers: Option<AllHeaders>,
    pub calls: Vec<RpcCall>,
}

impl RpcRequest {
    /// Decodes a complete RPC message payload (packets already joined).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, STRUCTURE);
        let all_headers = match AllHeaders::is_present(payload) {
            true => Some(AllHeaders::decode(&mut r)?),
            false => None,
        };
        let modern = all_headers.is_some();

        let mut calls = Vec::new();
        loop {
            if calls.len() == MAX_RPC_CALLS {
                return Err(too_many("RPC calls", MAX_RPC_CALLS));
            }
            let call = RpcCall::decode(&mut r, modern)?;
            let more = call.separator.is_some() && !r.is_empty();
            calls.push(call);
            if !more {
                break;
            }
        }
        r.finish()?;
        Ok(RpcRequest { all_headers, calls })
    }

    /// Encodes the payload (without packet headers).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(headers) = &self.all_headers {
            let mut buf = BytesMut::new();
            headers.encode(&mut buf)?;
            out.extend_from_slice(&buf);
        }
        self.calls.iter().try_for_each(|c| c.encode(out))
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn too_many(structure: &'static str, limit: usize) -> DecodeError {
    DecodeError::TooLarge {
        structure,
        length: limit + 1,
        limit,
    }
}

impl RpcCall {
    fn decode(r: &mut Reader<'_>, modern: bool) -> Result<Self, DecodeError> {
        let proc_name = decode_proc_name(r)?;
        let option_flags = r.u16_le()?;
        let mut params = Vec::new();
        let separator = loop {
            match r.rest().first() {
                None => break None,
                Some(&b) if is_separator(b, modern) => {
                    r.skip(1)?;
                    break Some(b);
                }
                Some(_) if params.len() == MAX_RPC_PARAMS => {
                    return Err(too_many("RPC parameters", MAX_RPC_PARAMS))
                }
                Some(_) => params.push(RpcParam::decode(r)?),
            }
        };
        Ok(RpcCall {
            proc_name,
            option_flags,
            params,
            separator,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_proc_name(&self.proc_name, out)?;
        out.extend_from_slice(&self.option_flags.to_le_bytes());
        self.params.iter().try_for_each(|p| p.encode(out))?;
        if let Some(b) = self.separator {
            out.push(b);
        }
        Ok(())
    }

    /// A new call with no parameters and no separator.
    pub fn new(proc_name: ProcName, option_flags: u16) -> Self {
        RpcCall {
            proc_name,
            option_flags,
            params: Vec::new(),
            separator: None,
        }
    }

    /// Replaces the type and value of parameter `index`.
    pub fn replace_param(
        &mut self,
        index: usize,
        type_info: TypeInfo,
        value: &SqlValue,
    ) -> Result<(), EncodeError> {
        let count = self.params.len();
        let param = self.params.get_mut(index).ok_or_else(|| {
            crate::tds::types::too_long("RPC call", "parameter index", index, count)
        })?;
        param.set_value(type_info, value)
    }
}

fn is_separator(b: u8, modern: bool) -> bool {
    match b {
        BATCH_FLAG | NO_EXEC_FLAG => true,
        BATCH_FLAG_PRE_72 => !modern,
        _ => false,
    }
}

fn decode_proc_name(r: &mut Reader<'_>) -> Result<ProcName, DecodeError> {
    let len = r.rest().get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if len == Some(PROC_ID_SWITCH) {
        r.skip(2)?;
        return Ok(ProcName::Id(r.u16_le()?));
    }
    read_us_varchar(r, "ProcName").map(ProcName::Name)
}

fn encode_proc_name(name: &ProcName, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match name {
        ProcName::Id(id) => {
            out.extend_from_slice(&PROC_ID_SWITCH.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
            Ok(())
        }
        ProcName::Name(name) => {
            // 0xFFFF as a length would read as ProcIDSwitch.
            if name.encode_utf16().count() >= usize::from(PROC_ID_SWITCH) {
                return Err(crate::tds::types::too_long(
                    "RPC",
                    "ProcName",
                    name.len(),
                    0xFFFE,
                ));
            }
            crate::tds::types::write_us_varchar(name, out, "RPC", "ProcName")
        }
    }
}

impl RpcParam {
    /// A parameter from a type and a typed value.
    pub fn new(
        name: impl Into<String>,
        status: u8,
        type_info: TypeInfo,
        value: &SqlValue,
    ) -> Result<Self, EncodeError> {
        let mut value_wire = Vec::new();
        encode_value_in(&type_info, TypeContext::Rpc, value, &mut value_wire)?;
        Ok(RpcParam {
            name: name.into(),
            status,
            type_info,
            value_wire,
            cipher_info: None,
        })
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = read_b_varchar(r, "ParamName")?;
        let status = r.u8()?;
        let type_info = TypeInfo::decode_in(r, TypeContext::Rpc)?;
        let raw = decode_value_raw_in(&type_info, TypeContext::Rpc, r)?;
        let cipher_info = match status & status_flags::ENCRYPTED {
            0 => None,
            _ => Some(decode_cipher_info(r)?),
        };
        Ok(RpcParam {
            name,
            status,
            type_info,
            value_wire: raw.wire().to_vec(),
            cipher_info,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_b_varchar(&self.name, out, "RPC parameter", "ParamName")?;
        out.push(self.status);
        self.type_info.encode(out)?;
        out.extend_from_slice(&self.value_wire);
        match &self.cipher_info {
            Some(c) => encode_cipher_info(c, out),
            None => Ok(()),
        }
    }

    pub fn is_output(&self) -> bool {
        self.status & status_flags::BY_REF_VALUE != 0
    }

    pub fn is_default(&self) -> bool {
        self.status & status_flags::DEFAULT_VALUE != 0
    }

    pub fn is_encrypted(&self) -> bool {
        self.status & status_flags::ENCRYPTED != 0
    }

    /// The value's wire bytes, framing included.
    pub fn value_wire(&self) -> &[u8] {
        &self.value_wire
    }

    /// The value as framed (data assembled, or NULL).
    pub fn raw_value(&self) -> Result<RawValue<'_>, DecodeError> {
        let mut r = Reader::new(&self.value_wire, "RPC parameter value");
        decode_value_raw_in(&self.type_info, TypeContext::Rpc, &mut r)
    }

    /// The typed value.
    pub fn value(&self) -> Result<SqlValue, DecodeError> {
        decode_value(&self.type_info, &self.raw_value()?)
    }

    /// Replaces type and value; on error the parameter is unchanged.
    pub fn set_value(&mut self, type_info: TypeInfo, value: &SqlValue) -> Result<(), EncodeError> {
        let mut wire = Vec::new();
        encode_value_in(&type_info, TypeContext::Rpc, value, &mut wire)?;
        self.type_info = type_info;
        self.value_wire = wire;
        Ok(())
    }
}

impl fmt::Debug for RpcParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcParam")
            .field("name", &self.name)
            .field("status", &format_args!("{:#04x}", self.status))
            .field("type_info", &self.type_info)
            .field("value_len", &self.value_wire.len())
            .field("encrypted", &self.cipher_info.is_some())
            .finish()
    }
}

fn decode_cipher_info(r: &mut Reader<'_>) -> Result<ParamCipherInfo, DecodeError> {
    let type_info = TypeInfo::decode_in(r, TypeContext::Rpc)?;
    let encryption_algo = r.u8()?;
    let algo_name = match encryption_algo {
        0 => Some(read_b_varchar(r, "AlgoName")?),
        _ => None,
    };
    Ok(ParamCipherInfo {
        type_info,
        encryption_algo,
        algo_name,
        encryption_type: r.u8()?,
        database_id: r.u32_le()?,
        cek_id: r.u32_le()?,
        cek_version: r.u32_le()?,
        cek_md_version: r.u64_le()?,
        norm_version: r.u8()?,
    })
}

fn encode_cipher_info(c: &ParamCipherInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    c.type_info.encode(out)?;
    out.push(c.encryption_algo);
    if let Some(name) = &c.algo_name {
        write_b_varchar(name, out, "ParamCipherInfo", "AlgoName")?;
    }
    out.push(c.encryption_type);
    out.extend_from_slice(&c.database_id.to_le_bytes());
    out.extend_from_slice(&c.cek_id.to_le_bytes());
    out.extend_from_slice(&c.cek_version.to_le_bytes());
    out.extend_from_slice(&c.cek_md_version.to_le_bytes());
    out.push(c.norm_version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURES: [&[u8]; 12] = [
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream0.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream1.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream2.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream3.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream4.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream5.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream6.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream7.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream8.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream9.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream10.node0.bin"),
        include_bytes!("../../fixtures/wireshark-rpc/wireshark-wiki_ms-sql-tds-rpc-requests.stream11.node0.bin"),
    ];

    /// Joins the packets of a client stream into messages of type 0x03.
    /// Packet framing is tested with the packet module; this only needs
    /// Type, Status bit EOM and the big-endian Length (2.2.3.1).
    fn rpc_messages(stream: &[u8]) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut current = Vec::new();
        let mut rest = stream;
        while rest.len() >= 8 {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            current.extend_from_slice(&rest[8..len]);
            if rest[1] & 0x01 != 0 {
                let message = std::mem::take(&mut current);
                if rest[0] == 0x03 {
                    messages.push(message);
                }
            }
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        messages
    }

    fn all_rpcs() -> Vec<(usize, Vec<u8>)> {
        CAPTURES
            .iter()
            .enumerate()
            .flat_map(|(i, s)| rpc_messages(s).into_iter().map(move |m| (i, m)))
            .collect()
    }

    fn decode_ok(payload: &[u8]) -> RpcRequest {
        let req = RpcRequest::decode(payload).unwrap();
        assert_eq!(req.to_bytes().unwrap(), payload);
        req
    }

    fn text(p: &RpcParam) -> String {
        p.value().unwrap().text().unwrap()
    }

    #[test]
    fn every_captured_rpc_round_trips() {
        let rpcs = all_rpcs();
        assert_eq!(rpcs.len(), 16);
        let calls: usize = rpcs.iter().map(|(_, m)| decode_ok(m).calls.len()).sum();
        assert_eq!(calls, 17);

        for (_, payload) in &rpcs {
            let req = decode_ok(payload);
            for p in req.calls.iter().flat_map(|c| &c.params) {
                let mut out = Vec::new();
                encode_value_in(
                    &p.type_info,
                    TypeContext::Rpc,
                    &p.value().unwrap(),
                    &mut out,
                )
                .unwrap();
                assert!(out == p.value_wire(), "{p:?}");
            }
        }
    }

    #[test]
    fn sp_prepexec_by_id() {
        let req = decode_ok(&rpc_messages(CAPTURES[0])[0]);
        assert!(req.all_headers.unwrap().transaction_descriptor().is_some());
        let call = &req.calls[0];
        assert_eq!(call.proc_name, ProcName::Id(proc_id::SP_PREPEXEC));
        assert_eq!(ProcName::well_known_name(13), Some("sp_prepexec"));

        let handle = &call.params[0];
        assert!(handle.is_output());
        assert!(matches!(
            handle.type_info,
            TypeInfo::Nullable { len: 4, .. }
        ));
        assert_eq!(text(&call.params[1]), "@P0 nvarchar(4000),@P1 int");
        assert_eq!(text(&call.params[3]), "zzz");
        assert_eq!(call.params.len(), 5);

        // The declaration string names the types the parameters carry.
        let declared: Vec<_> = call.params[3..]
            .iter()
            .map(|p| p.type_info.declaration())
            .collect();
        assert_eq!(
            declared,
            [Some("nvarchar(4000)".into()), Some("int".into())]
        );
    }

    #[test]
    fn two_calls_separated_by_batch_flag() {
        let messages = rpc_messages(CAPTURES[4]);
        let req = messages
            .iter()
            .map(|m| decode_ok(m))
            .find(|r| r.calls.len() == 2)
            .unwrap();
        assert_eq!(req.calls[0].separator, Some(BATCH_FLAG));
        assert_eq!(req.calls[1].separator, None);
        for call in &req.calls {
            assert_eq!(call.proc_name, ProcName::Id(proc_id::SP_EXECUTE));
        }
    }

    #[test]
    fn parameter_split_across_packets() {
        let stream = CAPTURES[5];
        assert_eq!(stream[1], 0x04, "first packet is not the last");
        let req = decode_ok(&rpc_messages(stream)[0]);
        let call = &req.calls[0];
        assert_eq!(call.proc_name, ProcName::Name("p_SaveExample".into()));

        let long = &call.params[0];
        assert_eq!(long.name, "@LongParam");
        assert!(long.type_info.is_plp());
        let value = text(long);
        assert!(value.starts_with("Studenckie Koło Przewodników Turystycznych w Gdańsku"));
        assert_eq!(
            long.raw_value().unwrap().data().unwrap().len(),
            value.encode_utf16().count() * 2
        );
    }

    #[test]
    fn by_name_without_all_headers_and_nulltype() {
        let req = decode_ok(&rpc_messages(CAPTURES[3])[0]);
        assert!(req.all_headers.is_none());
        let call = &req.calls[0];
        assert_eq!(call.proc_name.well_known_id(), Some(proc_id::SP_EXECUTESQL));
        assert_eq!(call.option_flags, option_flags::NO_METADATA);
        assert_eq!(text(&call.params[1]), "@HandlingStatus1 tinyint");

        let req = decode_ok(&rpc_messages(CAPTURES[8])[0]);
        let null = &req.calls[0].params[1];
        assert_eq!(
            null.type_info,
            TypeInfo::Fixed(crate::tds::types::FixedType::Null)
        );
        assert_eq!(null.value().unwrap(), SqlValue::Null);
    }

    #[test]
    fn replace_parameter_with_varbinary() {
        let payload = &rpc_messages(CAPTURES[0])[0];
        let mut req = decode_ok(payload);
        let before = req.calls[0].params.clone();

        let ciphertext = vec![0xC1; 40];
        req.calls[0]
            .replace_param(
                3,
                TypeInfo::varbinary(8000),
                &SqlValue::VarBinary(ciphertext.clone()),
            )
            .unwrap();
        let bytes = req.to_bytes().unwrap();

        let again = decode_ok(&bytes);
        let params = &again.calls[0].params;
        assert_eq!(params[3].type_info, TypeInfo::varbinary(8000));
        assert_eq!(params[3].value().unwrap(), SqlValue::VarBinary(ciphertext));
        for i in [0, 1, 2, 4] {
            assert_eq!(params[i], before[i]);
        }

        let bad = req.calls[0].replace_param(3, TypeInfo::varbinary(8000), &SqlValue::Int(1));
        assert!(bad.is_err());
        assert!(req.calls[0]
            .replace_param(9, TypeInfo::varbinary(1), &SqlValue::Null)
            .is_err());
        assert_eq!(req.calls[0].params[3].type_info, TypeInfo::varbinary(8000));
    }

    #[test]
    fn driver_encoded_rpc_bodies() {
        let vectors =
            include_str!("../../fixtures/test-suite-bytes/r2dbc-mssql_test_vectors.jsonl");
        let bodies: Vec<Vec<u8>> = vectors
            .lines()
            .filter(|l| l.contains("RpcQueryMessageFlowUnitTests") && l.contains("shouldEncodeSp"))
            .map(|l| {
                let json: serde_json::Value = serde_json::from_str(l).unwrap();
                let hex = json["hex"].as_str().unwrap();
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(bodies.len(), 6);
        let ids: Vec<_> = bodies
            .iter()
            .map(|b| decode_ok(b).calls[0].proc_name.clone())
            .collect();
        assert!(ids.contains(&ProcName::Id(proc_id::SP_CURSORCLOSE)));
        assert!(ids.contains(&ProcName::Id(proc_id::SP_EXECUTESQL)));
    }

    #[test]
    fn pre_72_batch_flag_and_no_exec() {
        let mut call = RpcCall::new(ProcName::Name("p".into()), 0);
        call.params.push(
            RpcParam::new(
                "@a",
                0,
                TypeInfo::Fixed(crate::tds::types::FixedType::Int4),
                &SqlValue::Int(7),
            )
            .unwrap(),
        );
        let mut first = call.clone();
        first.separator = Some(BATCH_FLAG_PRE_72);
        let mut second = call.clone();
        second.separator = Some(NO_EXEC_FLAG);
        let req = RpcRequest {
            all_headers: None,
            calls: vec![first, second, call],
        };
        let bytes = req.to_bytes().unwrap();
        assert_eq!(RpcRequest::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn name_of_128_characters_is_not_a_batch_flag_from_72_on() {
        let payload = &rpc_messages(CAPTURES[0])[0];
        let mut req = decode_ok(payload);
        let long_name = format!("@{}", "p".repeat(127));
        req.calls[0].params[4].name = long_name.clone();
        let bytes = req.to_bytes().unwrap();
        assert!(bytes.contains(&BATCH_FLAG_PRE_72));

        let again = decode_ok(&bytes);
        assert_eq!(again.calls.len(), 1);
        assert_eq!(again.calls[0].params[4].name, long_name);
    }

    #[test]
    fn encrypted_parameter_with_cipher_info() {
        let mut param = RpcParam::new(
            "@p",
            status_flags::ENCRYPTED,
            TypeInfo::varbinary(64),
            &SqlValue::VarBinary(vec![1, 2, 3]),
        )
        .unwrap();
        param.cipher_info = Some(ParamCipherInfo {
            type_info: TypeInfo::Fixed(crate::tds::types::FixedType::Int4),
            encryption_algo: 0,
            algo_name: Some("x".into()),
            encryption_type: 1,
            database_id: 5,
            cek_id: 6,
            cek_version: 7,
            cek_md_version: 8,
            norm_version: 1,
        });
        let mut call = RpcCall::new(ProcName::Id(proc_id::SP_EXECUTESQL), 0);
        call.params.push(param);
        let req = RpcRequest {
            all_headers: None,
            calls: vec![call],
        };
        let bytes = req.to_bytes().unwrap();
        let again = decode_ok(&bytes);
        assert_eq!(again, req);
        assert!(again.calls[0].params[0].is_encrypted());
    }

    #[test]
    fn well_known_names() {
        let by_name = |n: &str| ProcName::Name(n.into()).well_known_id();
        assert_eq!(by_name("SP_EXECUTESQL"), Some(10));
        assert_eq!(by_name("sys.sp_prepare"), Some(11));
        assert_eq!(by_name("[sys].[sp_unprepare]"), Some(15));
        assert_eq!(by_name("dbo.myproc"), None);
        assert_eq!(ProcName::well_known_name(0), None);
        assert_eq!(ProcName::well_known_name(1), Some("sp_cursor"));
    }

    #[test]
    fn every_prefix_is_handled_without_panic() {
        for (_, payload) in all_rpcs().iter().filter(|(_, m)| m.len() < 2000) {
            for n in 0..payload.len() {
                if let Ok(req) = RpcRequest::decode(&payload[..n]) {
                    assert_eq!(req.to_bytes().unwrap(), &payload[..n]);
                }
            }
        }
    }

    #[test]
    fn debug_does_not_show_values() {
        let req = decode_ok(&rpc_messages(CAPTURES[0])[0]);
        let debug = format!("{req:?}");
        assert!(!debug.contains("zzz") && !debug.contains("test_table"));
    }

    mod props {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;
        use crate::tds::all_headers::Header;
        use crate::tds::types::testing::{arb_name, arb_type_info, arb_typed};

        fn arb_param() -> impl Strategy<Value = RpcParam> {
            let typed = (arb_name(), 0u8..=3, arb_typed())
                .prop_map(|(name, status, (ti, v))| RpcParam::new(name, status, ti, &v).unwrap());
            // TVPs and other raw-only types: NULL values.
            let null = (arb_name(), arb_type_info(TypeContext::Rpc))
                .prop_filter("nullable", |(_, ti)| !matches!(ti, TypeInfo::Fixed(_)))
                .prop_map(|(name, ti)| RpcParam::new(name, 0, ti, &SqlValue::Null).unwrap());
            prop_oneof![4 => typed, 1 => null]
        }

        fn arb_proc() -> impl Strategy<Value = ProcName> {
            prop_oneof![
                (1u16..=15).prop_map(ProcName::Id),
                "[a-z_.]{1,20}".prop_map(ProcName::Name),
            ]
        }

        fn arb_request() -> impl Strategy<Value = RpcRequest> {
            let headers =
                proptest::option::of((any::<u64>(), any::<u32>()).prop_map(|(d, n)| AllHeaders {
                    headers: vec![Header::TransactionDescriptor {
                        descriptor: d,
                        outstanding_requests: n,
                    }],
                }));
            let call = (arb_proc(), any::<u16>(), vec(arb_param(), 0..5)).prop_map(
                |(p, flags, params)| RpcCall {
                    params,
                    ..RpcCall::new(p, flags)
                },
            );
            (headers, vec(call, 1..4), any::<bool>(), any::<u8>()).prop_map(
                |(all_headers, mut calls, trailing, pick)| {
                    let flags = match all_headers {
                        Some(_) => [BATCH_FLAG, NO_EXEC_FLAG, BATCH_FLAG],
                        None => [BATCH_FLAG_PRE_72, BATCH_FLAG, NO_EXEC_FLAG],
                    };
                    let last = calls.len() - 1;
                    for (i, c) in calls.iter_mut().enumerate() {
                        let flag = flags[(usize::from(pick) + i) % 3];
                        c.separator = (i < last || trailing).then_some(flag);
                    }
                    RpcRequest { all_headers, calls }
                },
            )
        }

        proptest! {
            #[test]
            fn encode_decode_encode_identity(req in arb_request()) {
                let bytes = req.to_bytes().unwrap();
                let decoded = RpcRequest::decode(&bytes).unwrap();
                prop_assert_eq!(&decoded, &req);
                prop_assert_eq!(decoded.to_bytes().unwrap(), bytes);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
                if let Ok(req) = RpcRequest::decode(&bytes) {
                    prop_assert_eq!(req.to_bytes().unwrap(), bytes);
                }
            }

            #[test]
            fn mutated_captures_never_panic(
                index in 0usize..16,
                flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            ) {
                let rpcs = all_rpcs();
                let mut bytes = rpcs[index].1.clone();
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                if let Ok(req) = RpcRequest::decode(&bytes) {
                    prop_assert_eq!(req.to_bytes().unwrap(), bytes);
                    for p in req.calls.iter().flat_map(|c| &c.params) {
                        let _ = p.value();
                    }
                }
            }
        }
    }
}
