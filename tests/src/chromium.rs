//! Debian's Chromium, headless: a page's DOM after it loaded, and
//! screenshots.

use std::path::Path;
use std::process::Command;

use crate::process::require;

fn chromium(profile: &Path) -> Command {
    let program = require(
        "chromium",
        "sudo apt-get install chromium fonts-dejavu-core",
    );
    let mut c = Command::new(program);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM of `url` as Chromium built it.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = chromium(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG of `url` in a `width`×`height` window, written to `to`.
pub fn screenshot(url: &str, to: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = chromium(profile.path())
        .arg(format!("--screenshot={}", to.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && to.is_file(),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
