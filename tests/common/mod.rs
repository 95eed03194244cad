//! Shared by the raw-protocol integration tests (server_behaviour.rs,
//! crash_recovery.rs): a jute encoder written independently of warden's own
//! codec (so a codec bug cannot hide itself), framing, ports, and where the
//! Debian package keeps Apache ZooKeeper's jars. Each test binary uses a
//! different subset, hence the dead_code allowance.
#![allow(dead_code)]


/// Multi-process ensembles, proxies and replica digests (tests/ensemble.rs).
pub mod ensemble;

#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bool(mut self, v: bool) -> Self {
        self.0.push(v as u8);
        self
    }
    pub fn buf(self, v: &[u8]) -> Self {
        let mut me = self.i32(v.len() as i32);
        me.0.extend_from_slice(v);
        me
    }
    pub fn str(self, v: &str) -> Self {
        self.buf(v.as_bytes())
    }
    pub fn strs(self, v: &[&str]) -> Self {
        let mut me = self.i32(v.len() as i32);
        for s in v {
            me = me.str(s);
        }
        me
    }
    /// vector<ACL>
    pub fn acl(self, entries: &[(i32, &str, &str)]) -> Self {
        let mut me = self.i32(entries.len() as i32);
        for (perms, scheme, id) in entries {
            me = me.i32(*perms).str(scheme).str(id);
        }
        me
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[allow(unused_imports)]
pub use warden::runtime::testkit::free_port;

pub fn apache_classpath() -> String {
    let jars = [
        "zookeeper.jar", "zookeeper-jute.jar", "slf4j-api.jar", "slf4j-nop.jar", "netty-handler.jar",
        "netty-common.jar", "netty-buffer.jar", "netty-transport.jar", "netty-codec.jar", "netty-resolver.jar",
        "netty-transport-native-epoll.jar", "netty-transport-native-unix-common.jar", "metrics-core.jar",
        "commons-cli.jar", "snappy-java.jar", "jline.jar",
    ];
    jars.iter()
        .map(|jar| format!("/usr/share/java/{jar}"))
        .filter(|path| std::path::Path::new(path).exists())
        .collect::<Vec<_>>()
        .join(":")
}
