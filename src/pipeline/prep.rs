//! The Prep stage (ZooKeeper's PrepRequestProcessor): turns a write request
//! into a txn, checking session, path, ACL, version and existence against the
//! latest state. The latest state is a `LatestTree` that every prepped txn is
//! applied to at once (ZooKeeper's tree plus outstanding changes); inside one
//! request, a multi's earlier ops are seen through an overlay of change
//! records, so a failed multi leaves nothing behind. Every write gets a zxid,
//! failed ones included: the error is itself a txn, as in ZooKeeper.

use hashbrown::HashMap;

use super::auth::{check_acl, fixup_acl};
use super::latest::{LatestNode, LatestTree};
use crate::proto::codes::{op, perms, CreateMode};
use crate::proto::{CreateRequest, ErrorCode, Id, MultiOp, Request};
use crate::tree::{path, shared_open_acl, DataTree};
use crate::txn::{ephemeral_owner, CreateTxn, Txn, TxnBody};

#[derive(Debug, Clone)]
pub struct PrepConfig {
    /// zookeeper.extendedTypesEnabled: TTL nodes.
    pub extended_types_enabled: bool,
}

pub struct Prep {
    /// The latest state: every prepped txn already applied.
    tree: LatestTree,
    /// The last zxid handed out.
    zxid_last: i64,
    config: PrepConfig,
    /// Changes made by earlier ops of the multi being prepped; `None` = deleted.
    overlay: HashMap<String, Option<LatestNode>>,
    /// A multi is being prepped: its ops record their changes in `overlay`.
    /// A single op reads everything before it changes anything, so it does not.
    in_multi: bool,
}

type PrepResult<T> = Result<T, ErrorCode>;

impl Prep {
    /// Prep starting from the committed state `tree`.
    pub fn new(tree: &DataTree, config: PrepConfig) -> Prep {
        Prep::from_latest(LatestTree::from_tree(tree), config)
    }

    /// Prep continuing from `tree`, the latest state of a committed tree.
    pub fn from_latest(tree: LatestTree, config: PrepConfig) -> Prep {
        let zxid_last = tree.last_processed_zxid();
        Prep { tree, zxid_last, config, overlay: HashMap::new(), in_multi: false }
    }

    pub fn tree(&self) -> &LatestTree {
        &self.tree
    }

    pub fn zxid_last(&self) -> i64 {
        self.zxid_last
    }

    /// The next txn takes the zxid after `zxid` (a new epoch's leader).
    pub fn set_zxid_last(&mut self, zxid: i64) {
        assert!(zxid >= self.zxid_last, "zxid went backward: 0x{zxid:x} after 0x{:x}", self.zxid_last);
        self.zxid_last = zxid;
    }

    fn next_zxid(&mut self) -> i64 {
        self.zxid_last += 1;
        self.zxid_last
    }

    /// Finishes a txn: applies it to the latest state and returns it.
    fn seal(&mut self, session_id: i64, cxid: i32, zxid: i64, time_ms: i64, body: TxnBody) -> Txn {
        self.overlay.clear();
        let txn = Txn { session_id, cxid, zxid, time_ms, body };
        self.tree.apply(&txn);
        txn
    }

    pub fn create_session(&mut self, session_id: i64, timeout_ms: i32, now_ms: i64) -> Txn {
        let zxid = self.next_zxid();
        self.seal(session_id, 0, zxid, now_ms, TxnBody::CreateSession { timeout_ms })
    }

    pub fn close_session(&mut self, session_id: i64, cxid: i32, now_ms: i64) -> Txn {
        let zxid = self.next_zxid();
        self.seal(session_id, cxid, zxid, now_ms, TxnBody::CloseSession)
    }

    /// The ContainerManager's request: session 0, as ZooKeeper sends it.
    pub fn delete_container(&mut self, node_path: &str, now_ms: i64) -> Txn {
        let zxid = self.next_zxid();
        let body = match self.prep_delete_container(node_path) {
            Ok(body) => body,
            Err(err) => TxnBody::Error { err },
        };
        self.seal(0, 0, zxid, now_ms, body)
    }

    /// Preps a write request from a live or dead session. `session_live` is the
    /// session tracker's verdict; a dead session's write fails SESSIONEXPIRED.
    pub fn prep(&mut self, now_ms: i64, session_id: i64, cxid: i32, request: &Request, auth: &[Id], session_live: bool) -> Txn {
        let zxid = self.next_zxid();
        if let Request::CloseSession = request {
            return self.seal(session_id, cxid, zxid, now_ms, TxnBody::CloseSession);
        }
        let body = if !session_live && !matches!(request, Request::DeleteContainer(_)) {
            TxnBody::Error { err: ErrorCode::SessionExpired }
        } else {
            match request {
                Request::Multi(multi) => self.prep_multi(&multi.ops, now_ms, session_id, auth),
                _ => self.prep_single(request, now_ms, session_id, auth).unwrap_or_else(|err| TxnBody::Error { err }),
            }
        };
        self.seal(session_id, cxid, zxid, now_ms, body)
    }

    fn prep_single(&mut self, request: &Request, now_ms: i64, session_id: i64, auth: &[Id]) -> PrepResult<TxnBody> {
        match request {
            Request::Create { opcode, request } => self.prep_create(*opcode, request, -1, now_ms, session_id, auth),
            Request::CreateTtl(request) => {
                let create = CreateRequest {
                    path: request.path.clone(),
                    data: request.data.clone(),
                    acl: request.acl.clone(),
                    flags: request.flags,
                };
                self.prep_create(op::CREATE_TTL, &create, request.ttl, now_ms, session_id, auth)
            }
            Request::Delete(request) => self.prep_delete(&request.path, request.version, auth),
            Request::DeleteContainer(request) => self.prep_delete_container(&request.path),
            Request::SetData(request) => {
                validate_path(&request.path)?;
                let mut record = self.record(&request.path)?;
                check_acl(&record.acl, perms::WRITE, auth)?;
                let version = check_and_increment_version(record.version, request.version)?;
                record.version = version;
                record.mtime = now_ms;
                self.remember(&request.path, Some(record));
                Ok(TxnBody::SetData { path: request.path.clone(), data: request.data.clone(), version })
            }
            Request::SetAcl(request) => {
                validate_path(&request.path)?;
                let acl = fixup_acl(&request.acl, auth)?;
                let mut record = self.record(&request.path)?;
                check_acl(&record.acl, perms::ADMIN, auth)?;
                let version = check_and_increment_version(record.aversion, request.version)?;
                if self.in_multi {
                    record.aversion = version;
                    record.acl = acl.clone().into();
                    self.remember(&request.path, Some(record));
                }
                Ok(TxnBody::SetAcl { path: request.path.clone(), acl, version })
            }
            Request::Check(request) => {
                validate_path(&request.path)?;
                let record = self.record(&request.path)?;
                check_acl(&record.acl, perms::READ, auth)?;
                check_and_increment_version(record.version, request.version)?;
                Ok(TxnBody::Check { path: request.path.clone() })
            }
            // Standalone ZooKeeper runs with reconfigEnabled=false.
            Request::Reconfig(_) => Err(ErrorCode::ReconfigDisabled),
            // Reads never reach Prep; a multi inside a multi cannot be decoded.
            _ => Err(ErrorCode::MarshallingError),
        }
    }

    fn prep_multi(&mut self, ops: &[MultiOp], now_ms: i64, session_id: i64, auth: &[Id]) -> TxnBody {
        // A multi is writes only (MultiOperationRecord refuses to mix kinds).
        if ops.iter().any(MultiOp::is_read) {
            return TxnBody::Error { err: ErrorCode::MarshallingError };
        }
        let mut bodies = Vec::with_capacity(ops.len());
        let mut failed = false;
        self.in_multi = true;
        for operation in ops {
            if failed {
                bodies.push(TxnBody::Error { err: ErrorCode::RuntimeInconsistency });
                continue;
            }
            let request = match operation.clone() {
                MultiOp::Create { opcode, request } => Request::Create { opcode, request },
                MultiOp::CreateTtl(request) => Request::CreateTtl(request),
                MultiOp::Delete { opcode: op::DELETE_CONTAINER, request } => {
                    Request::DeleteContainer(crate::proto::PathRequest { path: request.path })
                }
                MultiOp::Delete { request, .. } => Request::Delete(request),
                MultiOp::SetData(request) => Request::SetData(request),
                MultiOp::Check(request) => Request::Check(request),
                MultiOp::GetChildren(_) | MultiOp::GetData(_) => unreachable!("reads rejected above"),
            };
            match self.prep_single(&request, now_ms, session_id, auth) {
                Ok(body) => bodies.push(body),
                Err(err) => {
                    failed = true;
                    self.overlay.clear();
                    bodies.push(TxnBody::Error { err });
                }
            }
        }
        self.in_multi = false;
        TxnBody::Multi(bodies)
    }

    /// Records a multi op's change for the ops after it.
    fn remember(&mut self, node_path: &str, change: Option<LatestNode>) {
        if self.in_multi {
            self.overlay.insert(node_path.to_owned(), change);
        }
    }

    /// The node at `node_path` as of the ops prepped so far.
    fn record(&self, node_path: &str) -> PrepResult<LatestNode> {
        if let Some(change) = self.overlay.get(node_path) {
            return change.clone().ok_or(ErrorCode::NoNode);
        }
        self.tree.get(node_path).cloned().ok_or(ErrorCode::NoNode)
    }

    #[allow(clippy::too_many_arguments)]
    fn prep_create(
        &mut self,
        opcode: i32,
        request: &CreateRequest,
        ttl_ms: i64,
        now_ms: i64,
        session_id: i64,
        auth: &[Id],
    ) -> PrepResult<TxnBody> {
        let mode = CreateMode::from_flags(request.flags).ok_or(ErrorCode::BadArguments)?;
        if mode.is_ttl() && !self.config.extended_types_enabled {
            return Err(ErrorCode::Unimplemented);
        }
        // EphemeralType.validateTTL: TTL modes need 0 < ttl <= max; others no TTL.
        if mode.is_ttl() {
            if ttl_ms <= 0 || ttl_ms > ephemeral_owner::TTL_MS_MAX {
                return Err(ErrorCode::BadArguments);
            }
        } else if ttl_ms >= 0 {
            return Err(ErrorCode::BadArguments);
        }
        // validatePathForCreate: needs a slash and no NUL; the full check comes after the suffix.
        if !request.path.contains('/') || request.path.contains('\0') || request.path == "/" {
            return Err(ErrorCode::BadArguments);
        }
        let (parent_path, _) = path::split(&request.path);
        // OPEN_ACL_UNSAFE, nearly every create's, is valid and fixed up as
        // itself: the shared list, with nothing allocated.
        let open = shared_open_acl();
        let acl = if request.acl[..] == open[..] { open } else { fixup_acl(&request.acl, auth)?.into() };
        let mut parent = self.record(parent_path)?;
        check_acl(&parent.acl, perms::CREATE, auth)?;
        let mut node_path = request.path.clone();
        if mode.is_sequential() {
            node_path.push_str(&format!("{:010}", parent.cversion));
        }
        validate_path(&node_path)?;
        if self.record(&node_path).is_ok() {
            return Err(ErrorCode::NodeExists);
        }
        if ephemeral_owner::is_session(parent.ephemeral_owner) {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let parent_cversion = parent.cversion + 1;
        let owner = if mode.is_container() {
            ephemeral_owner::CONTAINER
        } else if mode.is_ttl() {
            ephemeral_owner::ttl(ttl_ms)
        } else if mode.is_ephemeral() {
            session_id
        } else {
            0
        };
        if self.in_multi {
            parent.child_count += 1;
            parent.cversion = parent_cversion;
            self.remember(parent_path, Some(parent));
            self.remember(&node_path, Some(LatestNode::created(owner, now_ms, acl.clone())));
        }
        Ok(TxnBody::Create(CreateTxn {
            opcode,
            path: node_path.into(),
            data: request.data.clone(),
            acl,
            ephemeral_owner: owner,
            parent_cversion,
        }))
    }

    /// getParentPathAndValidate: needs a slash and no NUL, and refuses the
    /// system nodes (`/`, `/zookeeper`, its quota and config nodes) with
    /// BADARGUMENTS, as ZooKeeper's isSpecialPath does. It deliberately does not
    /// run the full path check: a malformed path is simply not found.
    fn parent_of(node_path: &str) -> PrepResult<String> {
        let Some(last_slash) = node_path.rfind('/') else {
            return Err(ErrorCode::BadArguments);
        };
        if node_path.contains('\0') || is_special_path(node_path) {
            return Err(ErrorCode::BadArguments);
        }
        Ok(if last_slash == 0 { "/".to_owned() } else { node_path[..last_slash].to_owned() })
    }

    fn prep_delete(&mut self, node_path: &str, version: i32, auth: &[Id]) -> PrepResult<TxnBody> {
        let parent_path = Self::parent_of(node_path)?;
        let mut parent = self.record(&parent_path)?;
        check_acl(&parent.acl, perms::DELETE, auth)?;
        let node = self.record(node_path)?;
        check_and_increment_version(node.version, version)?;
        if node.child_count > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        assert!(parent.child_count > 0, "deleting {node_path} from a parent with no children");
        parent.child_count -= 1;
        self.remember(&parent_path, Some(parent));
        self.remember(node_path, None);
        Ok(TxnBody::Delete { path: node_path.to_owned() })
    }

    fn prep_delete_container(&mut self, node_path: &str) -> PrepResult<TxnBody> {
        let parent_path = Self::parent_of(node_path)?;
        let node = self.record(node_path)?;
        if node.child_count > 0 {
            return Err(ErrorCode::NotEmpty);
        }
        // ZooKeeper refuses only session ephemerals here.
        if ephemeral_owner::is_session(node.ephemeral_owner) {
            return Err(ErrorCode::BadVersion);
        }
        let mut parent = self.record(&parent_path)?;
        parent.child_count = parent.child_count.saturating_sub(1);
        self.remember(&parent_path, Some(parent));
        self.remember(node_path, None);
        Ok(TxnBody::Delete { path: node_path.to_owned() })
    }
}

fn is_special_path(node_path: &str) -> bool {
    matches!(node_path, "/" | crate::tree::ZOOKEEPER_PATH | crate::tree::QUOTA_PATH | crate::tree::CONFIG_PATH)
}

fn validate_path(node_path: &str) -> PrepResult<()> {
    path::validate(node_path).map_err(|_| ErrorCode::BadArguments)
}

/// checkAndIncVersion: -1 matches any version; the next version skips -1
/// when it wraps (ZOOKEEPER-4743).
fn check_and_increment_version(current: i32, expected: i32) -> PrepResult<i32> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    let next = current.wrapping_add(1);
    Ok(if next == -1 { 0 } else { next })
}

#[cfg(test)]
#[path = "prep_tests.rs"]
mod tests;
