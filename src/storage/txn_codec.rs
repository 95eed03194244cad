//! The binary encoding of a `Txn` inside a log record. Jute primitives, with
//! ZooKeeper's opcodes as body tags.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::codes::op;
use crate::proto::jute::{DecodeError, DecodeResult, Jute, Reader, Writer};
use crate::proto::{Acl, ErrorCode};
use crate::txn::{CreateTxn, Txn, TxnBody};

pub fn encode_txn(txn: &Txn, writer: &mut Writer) {
    writer.write_i64(txn.session_id);
    writer.write_i32(txn.cxid);
    writer.write_i64(txn.zxid);
    writer.write_i64(txn.time_ms);
    encode_body(&txn.body, writer);
}

fn encode_body(body: &TxnBody, writer: &mut Writer) {
    match body {
        TxnBody::CreateSession { timeout_ms } => {
            writer.write_i32(op::CREATE_SESSION);
            writer.write_i32(*timeout_ms);
        }
        TxnBody::CloseSession => writer.write_i32(op::CLOSE_SESSION),
        TxnBody::Create(create) => {
            writer.write_i32(op::CREATE);
            writer.write_i32(create.opcode);
            writer.write_string(&create.path);
            writer.write_buffer_opt(&create.data);
            writer.write_records(&create.acl);
            writer.write_i64(create.ephemeral_owner);
            writer.write_i32(create.parent_cversion);
        }
        TxnBody::Delete { path } => {
            writer.write_i32(op::DELETE);
            writer.write_string(path);
        }
        TxnBody::SetData { path, data, version } => {
            writer.write_i32(op::SET_DATA);
            writer.write_string(path);
            writer.write_buffer_opt(data);
            writer.write_i32(*version);
        }
        TxnBody::SetAcl { path, acl, version } => {
            writer.write_i32(op::SET_ACL);
            writer.write_string(path);
            acl.encode(writer);
            writer.write_i32(*version);
        }
        TxnBody::Check { path } => {
            writer.write_i32(op::CHECK);
            writer.write_string(path);
        }
        TxnBody::Multi(bodies) => {
            writer.write_i32(op::MULTI);
            writer.write_i32(bodies.len() as i32);
            for body in bodies {
                encode_body(body, writer);
            }
        }
        TxnBody::Error { err } => {
            writer.write_i32(op::ERROR);
            writer.write_i32(err.code());
        }
    }
}

pub fn decode_txn(reader: &mut Reader) -> DecodeResult<Txn> {
    Ok(Txn {
        session_id: reader.read_i64()?,
        cxid: reader.read_i32()?,
        zxid: reader.read_i64()?,
        time_ms: reader.read_i64()?,
        body: decode_body(reader, true)?,
    })
}

/// A create's ACL list; OPEN_ACL_UNSAFE, as nearly every create has, is
/// recognised by its bytes and shared, not decoded into new strings.
fn decode_create_acl(reader: &mut Reader) -> DecodeResult<Arc<[Acl]>> {
    static OPEN_ENCODED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut writer = Writer::new();
        crate::tree::open_acl_unsafe().encode(&mut writer);
        writer.into_bytes().to_vec()
    });
    if reader.skip_if_next(&OPEN_ENCODED) {
        return Ok(crate::tree::shared_open_acl());
    }
    Ok(Vec::<Acl>::decode(reader)?.into())
}

fn decode_body(reader: &mut Reader, top_level: bool) -> DecodeResult<TxnBody> {
    Ok(match reader.read_i32()? {
        op::CREATE_SESSION => TxnBody::CreateSession { timeout_ms: reader.read_i32()? },
        op::CLOSE_SESSION => TxnBody::CloseSession,
        op::CREATE => TxnBody::Create(CreateTxn {
            opcode: reader.read_i32()?,
            path: reader.read_string()?.into(),
            data: reader.read_buffer_opt()?,
            acl: decode_create_acl(reader)?,
            ephemeral_owner: reader.read_i64()?,
            parent_cversion: reader.read_i32()?,
        }),
        op::DELETE => TxnBody::Delete { path: reader.read_string()? },
        op::SET_DATA => TxnBody::SetData {
            path: reader.read_string()?,
            data: reader.read_buffer_opt()?,
            version: reader.read_i32()?,
        },
        op::SET_ACL => TxnBody::SetAcl {
            path: reader.read_string()?,
            acl: Vec::<Acl>::decode(reader)?,
            version: reader.read_i32()?,
        },
        op::CHECK => TxnBody::Check { path: reader.read_string()? },
        op::MULTI if top_level => {
            let count = reader.read_i32()?;
            // Each body is at least its 4-byte tag.
            if count < 0 || count as usize > reader.remaining() / 4 {
                return Err(DecodeError::BadLength(count));
            }
            let mut bodies = Vec::with_capacity(count as usize);
            for _ in 0..count {
                bodies.push(decode_body(reader, false)?);
            }
            TxnBody::Multi(bodies)
        }
        op::ERROR => {
            let code = reader.read_i32()?;
            TxnBody::Error { err: ErrorCode::from_code(code).ok_or(DecodeError::Invalid("unknown error code in txn"))? }
        }
        _ => return Err(DecodeError::Invalid("unknown txn type")),
    })
}

pub fn txn_to_bytes(txn: &Txn) -> Bytes {
    let mut writer = Writer::new();
    encode_txn(txn, &mut writer);
    writer.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::codes::perms;
    use crate::proto::Id;
    use crate::tree::open_acl_unsafe;

    #[test]
    fn every_txn_body_round_trips() {
        let create = TxnBody::Create(CreateTxn {
            opcode: op::CREATE2,
            path: "/a".into(),
            data: None,
            acl: open_acl_unsafe().into(),
            ephemeral_owner: 7,
            parent_cversion: 3,
        });
        let bodies = vec![
            TxnBody::CreateSession { timeout_ms: 4000 },
            TxnBody::CloseSession,
            create.clone(),
            TxnBody::Delete { path: "/a".into() },
            TxnBody::SetData { path: "/a".into(), data: Some(Bytes::from_static(b"x")), version: 2 },
            TxnBody::SetAcl { path: "/a".into(), acl: open_acl_unsafe(), version: 1 },
            TxnBody::Check { path: "/a".into() },
            TxnBody::Multi(vec![create, TxnBody::Error { err: ErrorCode::NoNode }]),
            TxnBody::Error { err: ErrorCode::NodeExists },
        ];
        for (index, body) in bodies.into_iter().enumerate() {
            let txn = Txn { session_id: 9, cxid: 4, zxid: index as i64 + 1, time_ms: 123, body };
            let bytes = txn_to_bytes(&txn);
            let mut reader = Reader::new(bytes);
            assert_eq!(decode_txn(&mut reader).unwrap(), txn);
            assert_eq!(reader.remaining(), 0);
        }
    }

    /// A create with OPEN_ACL_UNSAFE decodes to the process's shared list,
    /// allocating nothing for it; any other list decodes as itself, and a
    /// list that only starts like the open one is not taken for it.
    #[test]
    fn the_open_acl_decodes_to_the_shared_list() {
        let digest = Acl { perms: perms::READ, id: Id { scheme: "digest".into(), id: "u:h".into() } };
        let open_then_more: Vec<Acl> = open_acl_unsafe().into_iter().chain([digest.clone()]).collect();
        for (acl, shared) in [(open_acl_unsafe(), true), (vec![digest], false), (open_then_more, false)] {
            let body = TxnBody::Create(CreateTxn {
                opcode: op::CREATE,
                path: "/a".into(),
                data: None,
                acl: acl.clone().into(),
                ephemeral_owner: 0,
                parent_cversion: 1,
            });
            let txn = Txn { session_id: 9, cxid: 4, zxid: 1, time_ms: 123, body };
            let mut reader = Reader::new(txn_to_bytes(&txn));
            let decoded = decode_txn(&mut reader).unwrap();
            assert_eq!(decoded, txn);
            assert_eq!(reader.remaining(), 0);
            let TxnBody::Create(create) = decoded.body else { unreachable!() };
            assert_eq!(&create.acl[..], &acl[..]);
            assert_eq!(Arc::ptr_eq(&create.acl, &crate::tree::shared_open_acl()), shared, "{acl:?}");
        }
    }

    #[test]
    fn nested_multi_and_garbage_are_rejected() {
        let mut writer = Writer::new();
        for value in [0i64, 0] {
            writer.write_i64(value);
        }
        writer.write_i32(0);
        writer.write_i64(0);
        writer.write_i32(op::MULTI);
        writer.write_i32(1);
        writer.write_i32(op::MULTI);
        writer.write_i32(0);
        // session, cxid, zxid, time were written out of order above; any error is fine,
        // what matters is no panic and no nested multi.
        assert!(decode_txn(&mut Reader::new(writer.into_bytes())).is_err());
        assert!(decode_txn(&mut Reader::new(Bytes::from_static(&[1, 2, 3]))).is_err());
    }
}
