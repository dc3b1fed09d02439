//! A containerd of the tests' own (Debian's `containerd`): its own config,
//! socket, root and state directory under the scratch directory, never the
//! Docker Engine's. Started once for the test binary on first use and
//! stopped (its directory removed) after the binary exits, like the
//! registries; tests drive it with `ctr --address SOCK`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{have, reap_after_exit, scratch_dir};

/// The running instance.
pub struct Containerd {
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Containerd {
    /// The instance shared by this test binary, or why it cannot run here.
    pub fn shared() -> &'static Result<Containerd, String> {
        static ONE: OnceLock<Result<Containerd, String>> = OnceLock::new();
        ONE.get_or_init(start)
    }

    /// Runs `ctr --address SOCK -n occy-tests ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "occy-tests"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr runs")
    }
}

fn start() -> Result<Containerd, String> {
    for tool in ["containerd", "ctr"] {
        if !have(tool) {
            return Err(format!("{tool} is not installed (apt-get install containerd)"));
        }
    }
    let dir = scratch_dir("containerd");
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    // Only what a pull needs: no CRI, no snapshotters that want special
    // file systems, no metrics or debug listeners.
    let text = format!(
        "version = 2\n\
         root = {root:?}\n\
         state = {state:?}\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \
         \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\", \
         \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.internal.v1.opt\"]\n\
         [grpc]\n  address = {sock:?}\n\
         [ttrpc]\n  address = {ttrpc:?}\n\
         [debug]\n  address = \"\"\n\
         [metrics]\n  address = \"\"\n",
        root = path(&dir.join("root")),
        state = path(&dir.join("state")),
        sock = path(&socket),
        ttrpc = path(&dir.join("containerd.sock.ttrpc")),
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("containerd.log")).map_err(|e| e.to_string())?;
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .arg("--address")
        .arg(&socket)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run containerd: {e}"))?;
    reap_after_exit(&dir, Some(child.id()));
    let me = Containerd {
        socket: socket.clone(),
        dir: dir.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if socket.exists() && me.ctr(&["version"]).status.success() {
            return Ok(me);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            return Err(format!(
                "containerd did not answer on {} within 30 s: {log}",
                socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
