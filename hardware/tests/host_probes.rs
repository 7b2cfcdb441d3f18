//! CPU temperature and fans read from fixture sysfs trees of real machines
//! (`fixtures/sysfs/`): a Raspberry Pi 4 with a passive heat sink, a
//! Raspberry Pi 5 with the active cooler, and an x86 box with coretemp and
//! tach fans. The values are asserted exactly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hardware::{Observation, SensorConfig, SensorError, SensorKind};
use telemetry::FieldValue;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

fn config(kind: SensorKind, root: &Path) -> SensorConfig {
    let mut c = SensorConfig::new("probe", kind, Duration::from_secs(1));
    c.sysfs_root = Some(root.to_owned());
    c
}

async fn read(config: &SensorConfig) -> Result<Vec<Observation>, SensorError> {
    hardware::open(config).await?.read().await
}

async fn cpu(root: &Path) -> f64 {
    let obs = read(&config(SensorKind::CpuTemperature, root))
        .await
        .unwrap();
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0].measurement, "host");
    obs[0].float("cpu_temperature_c").unwrap()
}

/// (fan tag, fields) of each fan observation.
async fn fans(config: &SensorConfig) -> Vec<(String, Vec<(&'static str, FieldValue)>)> {
    read(config)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            assert_eq!(o.measurement, "fan");
            (o.tag("fan").unwrap().to_owned(), o.fields)
        })
        .collect()
}

fn f(v: f64) -> FieldValue {
    FieldValue::Float(v)
}

#[tokio::test]
async fn raspberry_pi_4_cpu_temperature_and_no_fan() {
    let root = fixture("rpi4");
    assert_eq!(cpu(&root).await, 48.686);
    let e = read(&config(SensorKind::Fan, &root)).await.unwrap_err();
    assert!(matches!(e, SensorError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("no fan under"), "{e}");
}

#[tokio::test]
async fn raspberry_pi_5_fan_speed_duty_and_cooling_state_in_one_reading() {
    let root = fixture("rpi5");
    assert_eq!(cpu(&root).await, 57.35);
    assert_eq!(
        fans(&config(SensorKind::Fan, &root)).await,
        [(
            "pwmfan/fan1".to_owned(),
            vec![
                ("fan_rpm", f(2815.0)),
                ("fan_state", f(2.0)),
                ("fan_duty_pct", f(95.0 / 255.0 * 100.0)),
            ]
        )]
    );
}

#[tokio::test]
async fn x86_box_coretemp_package_two_tach_fans_and_the_acpi_fan() {
    let root = fixture("x86");
    // The package sensor, not acpitz, the NVMe drive or a single core.
    assert_eq!(cpu(&root).await, 52.0);
    assert_eq!(
        fans(&config(SensorKind::Fan, &root)).await,
        [
            (
                "nct6798/fan1".to_owned(),
                vec![
                    ("fan_rpm", f(1250.0)),
                    ("fan_duty_pct", f(50.19607843137255))
                ]
            ),
            (
                "nct6798/fan2".to_owned(),
                vec![("fan_rpm", f(0.0)), ("fan_duty_pct", f(100.0))]
            ),
            (
                "Fan".to_owned(),
                vec![("fan_state", f(1.0)), ("fan_duty_pct", f(100.0))]
            ),
        ]
    );
    // Only the super-I/O's fans when it is named.
    let mut only = config(SensorKind::Fan, &root);
    only.hwmon = Some("nct6798".into());
    assert_eq!(fans(&only).await.len(), 2);
}

#[tokio::test]
async fn a_named_component_or_thermal_zone_is_read_instead() {
    let root = fixture("x86");
    let mut c = config(SensorKind::CpuTemperature, &root);
    c.component = Some("coretemp Core 1".into());
    assert_eq!(
        read(&c).await.unwrap()[0].float("cpu_temperature_c"),
        Some(49.0)
    );
    c.component = Some("acpitz".into());
    assert_eq!(
        read(&c).await.unwrap()[0].float("cpu_temperature_c"),
        Some(27.8)
    );
    c.component = Some("k10temp Tctl".into());
    let e = read(&c).await.unwrap_err().to_string();
    assert!(
        e.contains("no CPU temperature called \"k10temp Tctl\""),
        "{e}"
    );
    // The error lists what there is, so the installer can pick one.
    assert!(
        e.contains("coretemp Package id 0") && e.contains("x86_pkg_temp"),
        "{e}"
    );
}

/// Copies a fixture tree, symlinks included.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn renumbered_hwmon_devices_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("x86"), dir.path());
    let hwmon = dir.path().join("class/hwmon");
    // The next boot enumerates the drivers in another order.
    for (from, to) in [
        ("hwmon0", "hwmon9"),
        ("hwmon3", "hwmon0"),
        ("hwmon2", "hwmon3"),
        ("hwmon9", "hwmon2"),
    ] {
        std::fs::rename(hwmon.join(from), hwmon.join(to)).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(hwmon.join("hwmon0/name")).unwrap(),
        "nct6798\n"
    );
    assert_eq!(cpu(dir.path()).await, 52.0);
    let c = config(SensorKind::Fan, dir.path());
    assert_eq!(
        fans(&c).await,
        fans(&config(SensorKind::Fan, &fixture("x86"))).await
    );
}

#[tokio::test]
async fn a_pwm_fan_without_tachometer_reports_duty_only_and_a_vanished_fan_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("class/hwmon/hwmon1");
    std::fs::create_dir_all(&h).unwrap();
    std::fs::write(h.join("name"), "pwmfan\n").unwrap();
    std::fs::write(h.join("pwm1"), "51\n").unwrap();
    let c = config(SensorKind::Fan, dir.path());
    let mut sensor = hardware::open(&c).await.unwrap();
    let obs = sensor.read().await.unwrap();
    assert_eq!(obs[0].fields, vec![("fan_duty_pct", f(20.0))]);
    // Garbage in the attribute, then the device gone (a USB controller
    // unplugged): each fails that read with the file named.
    std::fs::write(h.join("pwm1"), "x\n").unwrap();
    let e = sensor.read().await.unwrap_err();
    assert!(
        matches!(e, SensorError::Garbage(_)) && e.to_string().contains("pwm1"),
        "{e}"
    );
    std::fs::remove_dir_all(&h).unwrap();
    let e = sensor.read().await.unwrap_err();
    assert!(
        matches!(e, SensorError::Open { .. }) && e.to_string().contains("pwm1"),
        "{e}"
    );
}

#[tokio::test]
async fn on_the_real_sys_the_cpu_temperature_comes_from_sysinfo_or_says_why_not() {
    // Whatever this machine has: a plausible value, or an error that lists
    // what was looked at. (CI machines are often VMs without sensors.)
    let c = SensorConfig::new("cpu", SensorKind::CpuTemperature, Duration::from_secs(1));
    match read(&c).await {
        Ok(obs) => {
            let t = obs[0].float("cpu_temperature_c").unwrap();
            assert!((-40.0..150.0).contains(&t), "{t}");
        }
        Err(e) => assert!(e.to_string().contains("thermal zones: ["), "{e}"),
    }
}
