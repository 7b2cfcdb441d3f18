//! Field deployment: the systemd units' exposure, the .deb packages
//! (contents, conffiles, maintainer scripts) installed into a scratch root
//! and upgraded over a live journal, and the arm64 binary run under qemu.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use buoy_tests::process::{Service, free_port, require};
use telemetry::record::Format;

use crate::common::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn run(c: &mut Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(c: &mut Command) -> String {
    String::from_utf8(run(c).stdout).expect("UTF-8 output")
}

#[test]
fn both_units_have_an_exposure_level_of_2_5_or_better() {
    let analyze = require("systemd-analyze", "sudo apt-get install systemd");
    for unit in [
        "buoy-edge-agent.service",
        "buoy-uplink.service",
        "buoy-fleet.service",
    ] {
        let path = workspace().join("systemd").join(unit);
        let out = stdout(
            Command::new(&analyze)
                .args(["security", "--offline=yes"])
                .arg(&path),
        );
        let level: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
        assert!(level <= 2.5, "{unit}: exposure {level}\n{out}");
    }
}

/// `scripts/package --profile dev` (a no-op rebuild when `scripts/test`
/// already ran it, and run once for all the tests here); the agent's and
/// the uplink's packages, amd64 then arm64.
fn packages() -> [PathBuf; 4] {
    let [agent, uplink, agent_arm, uplink_arm, _, _] = all_packages();
    [agent, uplink, agent_arm, uplink_arm]
}

/// Every package: the agent's, the uplink's, amd64 and arm64, then the
/// fleet's, amd64 and arm64.
fn all_packages() -> [PathBuf; 6] {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        run(Command::new(workspace().join("scripts/package"))
            .args(["--profile", "dev"])
            .current_dir(workspace()));
        *built = true;
    }
    let dir = workspace().join("target/debian");
    let find = |name: &str, arch: &str| {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.starts_with(&format!("{name}_")) && f.ends_with(&format!("_{arch}.deb"))
            })
            .unwrap_or_else(|| panic!("no {name} package for {arch} in {}", dir.display()))
    };
    [
        find("buoy-edge-agent", "amd64"),
        find("buoy-uplink", "amd64"),
        find("buoy-edge-agent", "arm64"),
        find("buoy-uplink", "arm64"),
        find("buoy-fleet", "amd64"),
        find("buoy-fleet", "arm64"),
    ]
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    stdout(Command::new("dpkg-deb").args(args).arg(deb))
}

/// A control file of `deb` (`conffiles`, `postinst`, ...), or "" if absent.
fn control_file(deb: &Path, name: &str, scratch: &Path) -> String {
    let dir = scratch.join(format!(
        "control-{}",
        deb.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&dir));
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// dpkg operating on `root` as its own system; the maintainer scripts run
/// outside a chroot with `DPKG_ROOT` set (the root has no shell of its own),
/// and dependencies are not checked (the root has no libc package).
fn dpkg_install(root: &Path, debs: &[&Path]) {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "--log=/dev/null",
            "-i",
        ])
        .args(debs)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
}

fn scratch_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "etc",
        "usr/lib/systemd/system",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
    root
}

fn installed_version(root: &Path, package: &str) -> String {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {package}")))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("Version: ")))
        .unwrap_or_else(|| panic!("{package} is not installed:\n{status}"))
        .to_owned()
}

#[test]
fn the_packages_install_upgrade_over_a_live_journal_and_run_on_arm64() {
    let [agent_amd64, uplink_amd64, agent_arm64, uplink_arm64] = packages();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path();

    // What is in them.
    for (deb, arch) in [(&agent_amd64, "amd64"), (&agent_arm64, "arm64")] {
        assert!(dpkg_deb(&["-f"], deb).contains(&format!("Architecture: {arch}")));
        let depends = dpkg_deb(&["-f"], deb);
        assert!(
            !depends.contains("libssl") && depends.contains("libc6"),
            "OpenSSL is linked in; only libc is needed:\n{depends}"
        );
        let files = dpkg_deb(&["-c"], deb);
        for f in [
            "./usr/bin/edge-agent",
            "./etc/buoy/edge-agent.toml",
            "/systemd/system/buoy-edge-agent.service",
            "./usr/lib/sysusers.d/buoy-edge-agent.conf",
            "./usr/share/doc/buoy-edge-agent/README.md",
        ] {
            assert!(
                files.contains(f),
                "{f} missing from {}:\n{files}",
                deb.display()
            );
        }
        assert!(
            !files.contains("var/lib/buoy"),
            "the journal is never packaged"
        );
        assert_eq!(
            control_file(deb, "conffiles", scratch).trim(),
            "/etc/buoy/edge-agent.toml"
        );
        let postinst = control_file(deb, "postinst", scratch);
        for step in [
            "systemd-sysusers",
            "deb-systemd-helper enable buoy-edge-agent.service",
            "was-enabled",
        ] {
            assert!(
                postinst.contains(step),
                "postinst lacks `{step}`:\n{postinst}"
            );
        }
        let prerm = control_file(deb, "prerm", scratch);
        assert!(prerm.contains("deb-systemd-invoke stop"), "{prerm}");
    }
    let uplink_files = dpkg_deb(&["-c"], &uplink_amd64);
    assert!(
        uplink_files.contains("./etc/buoy/uplink.toml"),
        "{uplink_files}"
    );
    assert!(
        !uplink_files.contains("sysusers"),
        "the uplink runs as a dynamic user"
    );

    // Installed into a scratch root.
    let root = scratch_root(scratch);
    dpkg_install(&root, &[&agent_amd64, &uplink_amd64]);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("buoy:") && l.ends_with(":/var/lib/buoy:/usr/sbin/nologin")),
        "the system user: {passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    for g in ["i2c", "dialout"] {
        assert!(
            group
                .lines()
                .any(|l| l.starts_with(&format!("{g}:")) && l.ends_with("buoy")),
            "buoy in group {g}: {group}"
        );
    }
    for unit in ["buoy-edge-agent.service", "buoy-uplink.service"] {
        let wants = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert!(wants.is_symlink(), "{unit} enabled: {}", wants.display());
    }
    let agent = root.join("usr/bin/edge-agent");
    let version = stdout(Command::new(&agent).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("edge-agent {}", env!("CARGO_PKG_VERSION"))
    );
    let conf = root.join("etc/buoy/edge-agent.toml");
    let checked = stdout(
        Command::new(&agent)
            .arg("--config")
            .arg(&conf)
            .arg("check-config"),
    );
    assert!(checked.contains("config OK"), "{checked}");
    let uplink = root.join("usr/bin/uplink");
    let checked = stdout(
        Command::new(&uplink)
            .arg("--config")
            .arg(root.join("etc/buoy/uplink.toml"))
            .arg("check-config"),
    );
    assert!(checked.contains("config OK"), "{checked}");

    // The units, as installed, with the installed binaries in place.
    let analyze = require("systemd-analyze", "sudo apt-get install systemd");
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "target") {
            let to = root
                .join("usr/lib/systemd/system")
                .join(p.file_name().unwrap());
            if !to.exists() {
                std::fs::copy(&p, to).unwrap();
            }
        }
    }
    let verified = Command::new(&analyze)
        .arg(format!("--root={}", root.display()))
        .args(["verify", "buoy-edge-agent.service", "buoy-uplink.service"])
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // The installed agent runs and journals where the unit says.
    let journal = root.join("var/lib/buoy/journal.redb");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let mut c = Command::new(&agent);
    c.arg("--config")
        .arg(&conf)
        .arg("run")
        .env("BUOY_JOURNAL_PATH", &journal)
        .env("BUOY_KAFKA_BROKERS", format!("127.0.0.1:{}", free_port()));
    let mut running = Service::spawn("edge-agent", c, &scratch.join("installed.log"));
    buoy_tests::process::wait_for(
        "the installed agent to start",
        Duration::from_secs(30),
        || running.log().contains("edge agent starting").then_some(()),
        || running.log(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        running.stop(Duration::from_secs(30)).success(),
        "{}",
        running.log()
    );
    let journal_before = std::fs::read(&journal).expect("a journal");

    // An operator's edit, then an upgrade: both survive.
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("topic = \"telemetry\"", "topic = \"site-7\"");
    std::fs::write(&conf, &edited).unwrap();
    // The next revision: the same package, its version raised (rebuilding
    // with cargo-deb would delete the first from target/debian).
    let unpacked = scratch.join("newer");
    run(Command::new("dpkg-deb")
        .arg("-R")
        .arg(&agent_amd64)
        .arg(&unpacked));
    let control = unpacked.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap().replace(
        &format!("Version: {}-1", env!("CARGO_PKG_VERSION")),
        &format!("Version: {}-2", env!("CARGO_PKG_VERSION")),
    );
    std::fs::write(&control, text).unwrap();
    let newer_deb = scratch.join("buoy-edge-agent-newer.deb");
    run(Command::new("dpkg-deb")
        .arg("-b")
        .arg(&unpacked)
        .arg(&newer_deb));
    assert_eq!(
        installed_version(&root, "buoy-edge-agent"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    dpkg_install(&root, &[&newer_deb]);
    assert_eq!(
        installed_version(&root, "buoy-edge-agent"),
        format!("{}-2", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        edited,
        "the config is kept"
    );
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        journal_before,
        "the journal is kept"
    );
    assert!(
        root.join("etc/systemd/system/multi-user.target.wants/buoy-edge-agent.service")
            .is_symlink()
    );

    // arm64: the packaged binary under qemu.
    let qemu = require("qemu-aarch64", "sudo apt-get install qemu-user");
    let arm = scratch.join("arm64");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&agent_arm64)
        .arg(&arm));
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&uplink_arm64)
        .arg(&arm));
    let arm_agent = arm.join("usr/bin/edge-agent");
    let elf = std::fs::read(&arm_agent).unwrap();
    assert_eq!(&elf[18..20], &[0xB7, 0x00], "an AArch64 ELF binary");
    let sysroot = "/usr/aarch64-linux-gnu";
    let version = stdout(
        Command::new(&qemu)
            .args(["-L", sysroot])
            .arg(&arm_agent)
            .arg("--version"),
    );
    assert_eq!(
        version.trim(),
        format!("edge-agent {}", env!("CARGO_PKG_VERSION"))
    );
    let version = stdout(
        Command::new(&qemu)
            .args(["-L", sysroot])
            .arg(arm.join("usr/bin/uplink"))
            .arg("--version"),
    );
    assert!(version.starts_with("uplink "), "{version}");

    let run_dir = scratch.join("arm-run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let config = agent_config(
        &run_dir,
        &format!("127.0.0.1:{}", free_port()),
        Format::Influx,
        1,
        "100ms",
    );
    let config_path = run_dir.join("edge-agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut c = Command::new(&qemu);
    c.args(["-L", sysroot])
        .arg(&arm_agent)
        .arg("--config")
        .arg(&config_path)
        .arg("run");
    let mut arm_run = Service::spawn("edge-agent (arm64)", c, &run_dir.join("edge-agent.log"));
    std::thread::sleep(Duration::from_secs(10));
    assert!(arm_run.is_running(), "{}", arm_run.log());
    assert!(
        arm_run.stop(Duration::from_secs(60)).success(),
        "{}",
        arm_run.log()
    );
    let stats = stdout(
        Command::new(&qemu)
            .args(["-L", sysroot])
            .arg(&arm_agent)
            .arg("--config")
            .arg(&config_path)
            .args(["journal", "stats", "--json"]),
    );
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let records = stats["records"].as_u64().unwrap();
    assert!(
        records >= 100,
        "10 s of 4 simulated sensors every 100 ms journaled under qemu: {records}\n{}",
        arm_run.log()
    );
}

#[test]
fn the_fleet_package_installs_its_unit_disabled_and_runs_on_arm64() {
    let [.., fleet_amd64, fleet_arm64] = all_packages();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path();
    for (deb, arch) in [(&fleet_amd64, "amd64"), (&fleet_arm64, "arm64")] {
        let fields = dpkg_deb(&["-f"], deb);
        assert!(
            fields.contains(&format!("Architecture: {arch}")),
            "{fields}"
        );
        assert!(
            !fields.contains("libssl") && fields.contains("libc6"),
            "{fields}"
        );
        let files = dpkg_deb(&["-c"], deb);
        for f in [
            "./usr/bin/buoy-fleet",
            "./etc/buoy/fleet.toml",
            "/systemd/system/buoy-fleet.service",
            "./usr/share/doc/buoy-fleet/mosquitto-acl.conf",
        ] {
            assert!(
                files.contains(f),
                "{f} missing from {}:\n{files}",
                deb.display()
            );
        }
        assert_eq!(
            control_file(deb, "conffiles", scratch).trim(),
            "/etc/buoy/fleet.toml"
        );
    }
    let root = scratch_root(scratch);
    dpkg_install(&root, &[&fleet_amd64]);
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/buoy-fleet.service")
            .exists(),
        "disabled until its broker is configured"
    );
    let fleet = root.join("usr/bin/buoy-fleet");
    let version = stdout(Command::new(&fleet).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("buoy-fleet {}", env!("CARGO_PKG_VERSION"))
    );
    // The shipped config loads: with no broker there, the error is about
    // reaching it (exit 2), not about the file.
    let out = Command::new(&fleet)
        .arg("--config")
        .arg(root.join("etc/buoy/fleet.toml"))
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{}", free_port()),
            "status",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the MQTT broker"), "{err}");

    let qemu = require("qemu-aarch64", "sudo apt-get install qemu-user");
    let arm = scratch.join("arm64");
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&fleet_arm64)
        .arg(&arm));
    let version = stdout(
        Command::new(&qemu)
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(arm.join("usr/bin/buoy-fleet"))
            .arg("--version"),
    );
    assert_eq!(
        version.trim(),
        format!("buoy-fleet {}", env!("CARGO_PKG_VERSION"))
    );
}
