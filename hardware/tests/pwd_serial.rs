//! The PWD driver's real serial code path (tokio-serial on a tty, polling,
//! framing) against a simulated PWD on a pseudo-terminal pair, including
//! noise, fragments, partial frames, a silent sensor and an unplugged one.

use std::time::Duration;

use hardware::pwd::simulator::{PwdSimulator, Reply};
use hardware::{HealthState, Outcome, SensorConfig, SensorError, SensorKind, Supervisor};
use telemetry::FieldValue;

const BODY: &str = "00  1839  1505 R-  61 61 61  0.33 12.16    0";
const FOG: &str = "10   180   240 F   45 45 45  0.00 12.16    0";

fn config(sim: &PwdSimulator) -> SensorConfig {
    let mut c = SensorConfig::new("vis", SensorKind::Pwd, Duration::from_secs(1));
    c.port = Some(sim.path().to_owned());
    c.answer_timeout = Some(Duration::from_millis(400));
    c.max_reopen_delay = Duration::from_secs(1);
    c
}

/// Reads until `n` attempts were made (skipping the backoff waits).
async fn attempts(s: &mut Supervisor, n: usize) -> Vec<Result<f64, SensorError>> {
    let mut out = Vec::new();
    while out.len() < n {
        match s.read(Duration::from_secs(5)).await {
            Outcome::Read(obs) => out.push(Ok(obs[0].float("visibility_m").unwrap())),
            Outcome::Failed(e) => out.push(Err(e)),
            Outcome::Waiting => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    out
}

#[tokio::test]
async fn polls_message_2_and_reads_every_field() {
    let sim = PwdSimulator::start("1", vec![Reply::Message(BODY.into())]).unwrap();
    let mut sensor = hardware::open(&config(&sim)).await.unwrap();
    for _ in 0..3 {
        let obs = sensor.read().await.unwrap();
        assert_eq!(obs.len(), 1);
        let o = &obs[0];
        assert_eq!(o.measurement, "visibility");
        assert_eq!(o.float("visibility_m"), Some(1839.0));
        assert_eq!(o.float("visibility_10min_m"), Some(1505.0));
        assert_eq!(o.float("precipitation_mm_h"), Some(0.33));
        assert!(
            o.fields
                .contains(&("present_weather_nws", FieldValue::String("R-".into())))
        );
        assert!(
            o.fields
                .contains(&("present_weather_15min", FieldValue::Int(61)))
        );
    }
    assert_eq!(sim.polls(), 3);
}

#[tokio::test]
async fn noise_fragments_partial_frames_silence_and_other_units() {
    let sim = PwdSimulator::start(
        "1",
        vec![
            Reply::NoiseThen(b"\x00\xff\x13~~".to_vec(), BODY.into()),
            Reply::Fragmented(FOG.into(), 7),
            Reply::Truncated(BODY.into(), 20),
            Reply::Garbage(b"\xfe\x80\xfe\x80\xfe\x80 not a frame".to_vec()),
            Reply::Silent,
            Reply::OtherUnit(BODY.into()),
            Reply::Message(FOG.into()),
        ],
    )
    .unwrap();
    let mut s = Supervisor::new(config(&sim));
    let got = attempts(&mut s, 7).await;
    let shown: Vec<String> = got
        .iter()
        .map(|r| match r {
            Ok(v) => format!("{v}"),
            Err(e) => e.to_string(),
        })
        .collect();
    assert!(matches!(got[0], Ok(1839.0)), "{shown:?}");
    assert!(matches!(got[1], Ok(180.0)), "{shown:?}");
    assert!(
        shown[2].starts_with("unreadable data: a partial frame (20 bytes)"),
        "{shown:?}"
    );
    assert!(
        shown[3].contains("hold no PWD frame (wrong baud rate?)"),
        "{shown:?}"
    );
    assert!(matches!(got[4], Err(SensorError::Timeout(_))), "{shown:?}");
    assert!(matches!(got[5], Err(SensorError::Timeout(_))), "{shown:?}");
    assert!(matches!(got[6], Ok(180.0)), "{shown:?}");
    let h = s.health();
    assert_eq!((h.readings, h.errors, h.consecutive_errors), (3, 4, 0));
    // Each of the four faults closed the port; it was opened again each time.
    assert_eq!(h.reopens, 4);
    assert_eq!(h.state, HealthState::Ok);
    assert_eq!(sim.polls(), 7);
}

#[tokio::test]
async fn an_unplugged_sensor_fails_every_read_and_the_reopen_names_the_port() {
    let sim = PwdSimulator::start("1", vec![Reply::Message(BODY.into())]).unwrap();
    let config = config(&sim);
    let mut s = Supervisor::new(config.clone());
    assert!(matches!(attempts(&mut s, 1).await[0], Ok(1839.0)));
    // The USB serial adapter is pulled: its tty goes away.
    drop(sim);
    let got = attempts(&mut s, 2).await;
    assert!(got.iter().all(|r| r.is_err()), "{got:?}");
    let e = got[1].as_ref().unwrap_err();
    assert!(matches!(e, SensorError::Open { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&config.port.as_ref().unwrap().display().to_string()),
        "{e}"
    );
    assert_eq!(s.health().state, HealthState::Failing);
    assert_eq!(s.health().consecutive_errors, 2);
}

#[tokio::test]
async fn a_missing_port_is_named_with_a_hint() {
    let mut c = SensorConfig::new("vis", SensorKind::Pwd, Duration::from_secs(1));
    c.port = Some("/dev/ttyNOPE0".into());
    let e = hardware::open(&c).await.err().unwrap();
    assert!(
        e.to_string().starts_with("cannot open /dev/ttyNOPE0"),
        "{e}"
    );
    assert!(
        e.hint(SensorKind::Pwd)
            .unwrap()
            .contains("/dev/serial/by-id")
    );
}
