//! Advice about the filesystem the journal lives on.
//!
//! ext4 mounted without `lazytime` writes a file's new modification time to
//! its own journal whenever the file is written, in its next commit (every
//! 5 s): for a journal committing every second that is about 170 MB/day at
//! the disk on top of the journal's own writes (docs/performance.md, "Flash
//! wear at the disk of a machine"). The agent says so once at start-up; it
//! never changes mount options itself.

use std::path::{Path, PathBuf};

/// A mount that costs flash wear the operator can save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithoutLazytime {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// The mount holding `path` (the longest mount point it lies under), if it
/// is ext4 (or ext3) without `lazytime`. `mountinfo` is the text of
/// `/proc/self/mountinfo`; `path` should be canonical.
pub fn without_lazytime(mountinfo: &str, path: &Path) -> Option<WithoutLazytime> {
    let mut best: Option<(PathBuf, String, bool)> = None;
    for line in mountinfo.lines() {
        let Some((mount, rest)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = mount.split(' ').collect();
        let super_fields: Vec<&str> = rest.split(' ').collect();
        let (Some(point), Some(options), Some(fs_type)) =
            (fields.get(4), fields.get(5), super_fields.first())
        else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !path.starts_with(&point) {
            continue;
        }
        if best
            .as_ref()
            .is_some_and(|(b, ..)| b.components().count() > point.components().count())
        {
            continue;
        }
        let lazy = [options, super_fields.get(2).unwrap_or(&"")]
            .iter()
            .any(|o| o.split(',').any(|o| o == "lazytime"));
        best = Some((point, fs_type.to_string(), lazy));
    }
    let (mount_point, fs_type, lazy) = best?;
    (!lazy && (fs_type == "ext4" || fs_type == "ext3")).then_some(WithoutLazytime {
        mount_point,
        fs_type,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Logs, once, when the journal's directory `dir` is on ext4 without
/// `lazytime`. Anything unreadable is silence, not an error.
pub fn advise(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if let Some(m) = without_lazytime(&mountinfo, &dir) {
        tracing::info!(
            mount_point = %m.mount_point.display(),
            fs_type = %m.fs_type,
            "the journal's filesystem is mounted without lazytime: it writes file times to \
             its own journal every few seconds, about 170 MB/day more flash wear at the \
             default commit_interval; add lazytime to its options in /etc/fstab \
             (for example defaults,noatime,lazytime)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 179:3 / /var/lib/buoy rw,relatime shared:5 - ext4 /dev/mmcblk0p3 rw,lazytime
31 22 0:30 / /tmp rw shared:6 - tmpfs tmpfs rw
32 22 179:4 / /mnt/my\\040data rw,relatime shared:7 - ext4 /dev/sda1 rw
";

    #[test]
    fn ext4_without_lazytime_is_found_under_the_longest_mount_point() {
        let found = without_lazytime(MOUNTINFO, Path::new("/home/pi/buoy-data"));
        assert_eq!(
            found,
            Some(WithoutLazytime {
                mount_point: "/".into(),
                fs_type: "ext4".into()
            })
        );
        let spaced = without_lazytime(MOUNTINFO, Path::new("/mnt/my data/buoy"));
        assert_eq!(spaced.unwrap().mount_point, Path::new("/mnt/my data"));
    }

    #[test]
    fn lazytime_or_another_filesystem_needs_no_advice() {
        assert_eq!(
            without_lazytime(MOUNTINFO, Path::new("/var/lib/buoy")),
            None
        );
        assert_eq!(without_lazytime(MOUNTINFO, Path::new("/tmp/j")), None);
        assert_eq!(without_lazytime("", Path::new("/x")), None);
    }
}
