//! A running call between a patient and a clinician webrtc-rs peer (`loadtest::peer`, the
//! project's one WebRTC client), publishing the small samples in `tests/media`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::media::Media;
use loadtest::peer::{IceServer, Options, PeerError, Seen, Transport, participant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{TestResult, Visit, text};

/// Packets of each kind a peer must receive from the other for media to count as flowing.
pub const WANTED: u32 = 20;
/// The budget the issue sets for media to flow both ways.
pub const MEDIA_DEADLINE: Duration = Duration::from_secs(10);
/// No test call lasts longer than this; the peers give up then.
const CALL_LIMIT: Duration = Duration::from_secs(120);

fn media_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/media")
        .join(name)
}

/// The `media.ice_servers` of a start answer (none in a Chime answer).
pub fn ice_servers(answer: &serde_json::Value) -> TestResult<Vec<IceServer>> {
    match &answer["media"]["ice_servers"] {
        serde_json::Value::Null => Ok(Vec::new()),
        servers => Ok(serde_json::from_value(servers.clone())?),
    }
}

/// A running call between a patient and a clinician peer.
pub struct Call {
    /// What the patient received.
    pub patient: Arc<Seen>,
    /// What the clinician received.
    pub clinician: Arc<Seen>,
    /// The patient's participant task.
    pub patient_task: tokio::task::JoinHandle<Result<(), PeerError>>,
    /// The clinician's participant task.
    pub clinician_task: tokio::task::JoinHandle<Result<(), PeerError>>,
    /// Raw frames to send on the patient's signaling socket.
    pub patient_inject: mpsc::Sender<Message>,
    /// Raw frames to send on the clinician's signaling socket.
    pub clinician_inject: mpsc::Sender<Message>,
    /// Stops the media players when set.
    pub stop: watch::Sender<bool>,
}

impl Call {
    /// Starts both peers of `visit` (the patient first), the patient tolerating `error`
    /// frames if asked, and waits until each has received [`WANTED`] audio and video packets
    /// from the other — failing after [`MEDIA_DEADLINE`].
    pub async fn start(visit: &Visit, patient_tolerates_errors: bool) -> TestResult<Call> {
        Self::start_over(visit, patient_tolerates_errors, Transport::Udp).await
    }

    /// As [`Call::start`], both peers reaching the SFU over `transport` with the ICE servers
    /// of their own start answers.
    pub async fn start_over(
        visit: &Visit,
        patient_tolerates_errors: bool,
        transport: Transport,
    ) -> TestResult<Call> {
        let media = Arc::new(Media::from_files(
            &media_file("sample-opus.ogg"),
            Some(&media_file("sample-vp8.ivf")),
        )?);
        let signaling_url = text(&visit.patient["media"]["signaling_url"])?;
        let deadline = Instant::now() + CALL_LIMIT;
        let (stop, stopped) = watch::channel(false);
        let patient = Arc::new(Seen::default());
        let clinician = Arc::new(Seen::default());
        let (patient_inject, patient_frames) = mpsc::channel(1024);
        let (clinician_inject, clinician_frames) = mpsc::channel(16);
        let started = Instant::now();
        let patient_task = tokio::spawn(participant(
            Options {
                signaling_url: signaling_url.clone(),
                grant: text(&visit.patient["grant"])?,
                admits: false,
                tolerate_errors: patient_tolerates_errors,
                media: Arc::clone(&media),
                transport,
                ice_servers: ice_servers(&visit.patient)?,
                deadline,
                impair: None,
            },
            Arc::clone(&patient),
            patient_frames,
            stopped.clone(),
        ));
        let clinician_task = tokio::spawn(participant(
            Options {
                signaling_url,
                grant: text(&visit.clinician["grant"])?,
                admits: true,
                tolerate_errors: false,
                media,
                transport,
                ice_servers: ice_servers(&visit.clinician)?,
                deadline,
                impair: None,
            },
            Arc::clone(&clinician),
            clinician_frames,
            stopped,
        ));
        let mut call = Call {
            patient,
            clinician,
            patient_task,
            clinician_task,
            patient_inject,
            clinician_inject,
            stop,
        };
        call.flows(WANTED, MEDIA_DEADLINE.saturating_sub(started.elapsed()))
            .await?;
        Ok(call)
    }

    /// Waits up to `within` until each peer has received `more` further audio and video
    /// packets than it had when called.
    pub async fn flows(&mut self, more: u32, within: Duration) -> TestResult {
        let base = (self.patient.counts(), self.clinician.counts());
        let started = Instant::now();
        let enough = |seen: &Seen, (audio, video): (u32, u32)| {
            let (a, v) = seen.counts();
            a >= audio + more && v >= video + more
        };
        while !(enough(&self.patient, base.0) && enough(&self.clinician, base.1)) {
            if self.patient_task.is_finished() {
                return Err(
                    format!("the patient stopped: {:?}", (&mut self.patient_task).await?).into(),
                );
            }
            if self.clinician_task.is_finished() {
                return Err(format!(
                    "the clinician stopped: {:?}",
                    (&mut self.clinician_task).await?
                )
                .into());
            }
            if started.elapsed() >= within {
                return Err(format!(
                    "media did not flow both ways within {within:?}: patient has (audio, video) {:?}, clinician {:?}, from {base:?}",
                    self.patient.counts(),
                    self.clinician.counts(),
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits for both peers to finish (their sockets closed), up to `within`.
    pub async fn finished(self, within: Duration) -> TestResult {
        let _ = self.stop.send(true);
        for task in [self.patient_task, self.clinician_task] {
            tokio::time::timeout(within, task).await???;
        }
        Ok(())
    }
}
