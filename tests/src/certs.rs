//! Test certificates made with openssl: a CA, server certificates for
//! 127.0.0.1 and client certificates.

use std::path::Path;
use std::process::Command;

use crate::process::require;

pub fn openssl(dir: &Path, args: &[&str]) {
    let openssl = require("openssl", "apt-get install openssl");
    let out = Command::new(openssl)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new EC key (encrypted with `password`, if given) and a signing request.
pub fn key_and_request(dir: &Path, name: &str, subject: &str, password: Option<&str>) {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ];
    args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    let pass = password.map(|p| format!("pass:{p}"));
    match &pass {
        Some(pass) => args.extend(["-passout", pass.as_str()]),
        None => args.push("-nodes"),
    }
    openssl(dir, &args);
}

/// `<name>.pem`: `<name>.csr` signed by the test CA.
pub fn sign(dir: &Path, name: &str, extensions: Option<&str>) {
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    let mut args = vec!["x509", "-req", "-in", &csr, "-out", &pem, "-days", "2"];
    args.extend(["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]);
    if let Some(file) = extensions {
        args.extend(["-extfile", file]);
    }
    openssl(dir, &args);
}

/// `ca.pem`/`ca.key`, a test CA, and `server.pem`/`server.key`, a server
/// certificate for 127.0.0.1 signed by it.
pub fn ca_and_server(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let ca = [
        "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &ca,
            &["-subj", "/CN=buoy test CA"],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    key_and_request(dir, "server", "/CN=127.0.0.1", None);
    sign(dir, "server", Some("san.cnf"));
}
