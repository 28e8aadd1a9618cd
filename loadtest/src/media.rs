//! Pre-encoded media a peer publishes: VP8 frames from an IVF file and Opus packets from an
//! Ogg file, parsed once into memory and shared by every peer of a run (reading and parsing
//! files per peer and per loop would cost more than sending them).
//!
//! The built-in samples live in `loadtest/media` (see its README for how they were made) and
//! are compiled into the binary so that it runs from anywhere.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer as _;

/// RTP clock rate of Opus (RFC 7587) and of video (RFC 7741 for VP8).
const AUDIO_CLOCK: u32 = 48_000;
const VIDEO_CLOCK: u32 = 90_000;

/// Frames beyond this many in one file are refused: the samples are seconds long, and a
/// bound keeps a wrong file from eating memory.
const MAX_FRAMES: usize = 100_000;

const OPUS: &[u8] = include_bytes!("../media/opus-48k.ogg");
const VP8_360P: &[u8] = include_bytes!("../media/vp8-360p.ivf");
const VP8_720P: &[u8] = include_bytes!("../media/vp8-720p.ivf");
const VP8_180P: &[u8] = include_bytes!("../media/vp8-180p.ivf");

/// Which built-in video a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Video {
    /// 640×360, 30 fps, about 500 kbit/s.
    #[serde(rename = "360p")]
    P360,
    /// 1280×720, 30 fps, about 1.5 Mbit/s.
    #[serde(rename = "720p")]
    P720,
    /// Audio only.
    None,
}

impl std::str::FromStr for Video {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "360p" => Ok(Video::P360),
            "720p" => Ok(Video::P720),
            "none" => Ok(Video::None),
            other => Err(format!("unknown video {other:?}: use 360p, 720p or none")),
        }
    }
}

/// A media file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The container could not be parsed.
    #[error("parsing {what}: {message}")]
    Parse {
        /// Which file or sample.
        what: String,
        /// The parser's complaint.
        message: String,
    },
}

/// One encoded frame or packet and how many RTP clock ticks it lasts.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The codec bitstream (a VP8 frame or an Opus packet).
    pub data: Bytes,
    /// Its duration in ticks of the stream's RTP clock.
    pub ticks: u32,
}

/// A looping stream: frames played one after the other, from the start again at the end.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The frames in order.
    pub frames: Arc<[Frame]>,
    /// The RTP clock rate.
    pub clock_rate: u32,
}

impl Stream {
    /// How long a frame of `ticks` lasts, rounded up to the nanosecond so that webrtc-rs's
    /// packetizer (which truncates `duration × clock_rate`) advances the RTP timestamp by
    /// exactly `ticks` — 1/30 s as whole nanoseconds would lose a tick per frame.
    #[must_use]
    pub fn duration(&self, ticks: u32) -> Duration {
        let rate = u64::from(self.clock_rate.max(1));
        Duration::from_nanos((u64::from(ticks) * 1_000_000_000).div_ceil(rate))
    }
}

/// What every peer of a run publishes.
#[derive(Debug, Clone)]
pub struct Media {
    /// Opus, 48 kHz.
    pub audio: Stream,
    /// VP8, or none for audio-only peers.
    pub video: Option<Stream>,
    /// The camera as simulcast layers instead, lowest first, each with its rid; empty
    /// without simulcast.
    pub layers: Vec<(&'static str, Stream)>,
}

impl Media {
    /// The samples compiled into the binary.
    ///
    /// # Errors
    /// Only if the embedded files are corrupt.
    pub fn builtin(video: Video) -> Result<Media, MediaError> {
        let video = match video {
            Video::P360 => Some(parse_ivf(VP8_360P, "vp8-360p.ivf")?),
            Video::P720 => Some(parse_ivf(VP8_720P, "vp8-720p.ivf")?),
            Video::None => None,
        };
        Ok(Media {
            audio: parse_ogg(OPUS, "opus-48k.ogg")?,
            video,
            layers: Vec::new(),
        })
    }

    /// The built-in samples with the camera as three simulcast layers, as the join page
    /// sends it: `q` 320×180, `h` 640×360, `f` 1280×720.
    ///
    /// # Errors
    /// Only if the embedded files are corrupt.
    pub fn builtin_simulcast() -> Result<Media, MediaError> {
        Ok(Media {
            audio: parse_ogg(OPUS, "opus-48k.ogg")?,
            video: None,
            layers: vec![
                ("q", parse_ivf(VP8_180P, "vp8-180p.ivf")?),
                ("h", parse_ivf(VP8_360P, "vp8-360p.ivf")?),
                ("f", parse_ivf(VP8_720P, "vp8-720p.ivf")?),
            ],
        })
    }

    /// Media from files: an Opus Ogg file (one packet per page) and a VP8 IVF file.
    ///
    /// # Errors
    /// When a file cannot be read or parsed.
    pub fn from_files(ogg: &Path, ivf: Option<&Path>) -> Result<Media, MediaError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| MediaError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let video = match ivf {
            Some(path) => Some(parse_ivf(&read(path)?, &path.display().to_string())?),
            None => None,
        };
        Ok(Media {
            audio: parse_ogg(&read(ogg)?, &ogg.display().to_string())?,
            video,
            layers: Vec::new(),
        })
    }
}

fn parse_error(what: &str, message: impl std::fmt::Display) -> MediaError {
    MediaError::Parse {
        what: what.to_owned(),
        message: message.to_string(),
    }
}

/// VP8 frames; each lasts one IVF timebase unit times the frame's timestamp step.
fn parse_ivf(bytes: &[u8], what: &str) -> Result<Stream, MediaError> {
    let (mut ivf, header) = IVFReader::new(Cursor::new(bytes)).map_err(|e| parse_error(what, e))?;
    if header.timebase_denominator == 0 {
        return Err(parse_error(what, "zero timebase"));
    }
    // Ticks per IVF timestamp unit: 90 kHz × numerator / denominator (3000 at 1/30 s).
    let unit = u64::from(VIDEO_CLOCK) * u64::from(header.timebase_numerator)
        / u64::from(header.timebase_denominator);
    let mut raw = Vec::new();
    while let Ok((frame, frame_header)) = ivf.parse_next_frame() {
        if raw.len() >= MAX_FRAMES {
            return Err(parse_error(what, "too many frames"));
        }
        raw.push((frame.freeze(), frame_header.timestamp));
    }
    if raw.is_empty() {
        return Err(parse_error(what, "no frames"));
    }
    let frames: Vec<Frame> = raw
        .iter()
        .enumerate()
        .map(|(i, (data, pts))| {
            // A frame lasts until the next one; the last as long as one timebase unit.
            let step = raw
                .get(i + 1)
                .map_or(1, |(_, next)| next.saturating_sub(*pts).max(1));
            Frame {
                data: data.clone(),
                ticks: u32::try_from(step * unit).unwrap_or(u32::MAX),
            }
        })
        .collect();
    Ok(Stream {
        frames: frames.into(),
        clock_rate: VIDEO_CLOCK,
    })
}

/// Opus packets, one per Ogg page, each lasting what its TOC says it decodes to (48 kHz).
fn parse_ogg(bytes: &[u8], what: &str) -> Result<Stream, MediaError> {
    let (mut ogg, opus) =
        OggReader::new(Cursor::new(bytes), true).map_err(|e| parse_error(what, e))?;
    let mut frames = Vec::new();
    // Granule positions count the encoder's pre-skip samples too; they are not audio time,
    // and counting them would stretch the first packet and jump the timestamps at each loop.
    let mut last_granule = u64::from(opus.pre_skip);
    while let Ok((page, header)) = ogg.parse_next_page() {
        if frames.len() >= MAX_FRAMES {
            return Err(parse_error(what, "too many pages"));
        }
        let samples = header.granule_position.saturating_sub(last_granule);
        last_granule = header.granule_position;
        // The Opus header pages carry no audio.
        if samples == 0 {
            continue;
        }
        // The RTP timestamp advances by what the packet decodes to (its TOC), not by the
        // granule step: the last page's step is cut short by the encoder's end trim.
        let samples = opus_samples(&page).map_or(samples, u64::from);
        frames.push(Frame {
            data: page.freeze(),
            ticks: u32::try_from(samples).unwrap_or(u32::MAX),
        });
    }
    if frames.is_empty() {
        return Err(parse_error(what, "no audio pages"));
    }
    Ok(Stream {
        frames: frames.into(),
        clock_rate: AUDIO_CLOCK,
    })
}

/// The width a VP8 RTP payload codes, when it starts a keyframe (RFC 7741 §4.2 descriptor,
/// then RFC 6386 §9.1: a frame tag with the P bit clear, the start code, the 14-bit width).
#[must_use]
pub fn vp8_keyframe_width(payload: &[u8]) -> Option<u16> {
    let mut packet = Vp8Packet::default();
    let frame = packet.depacketize(&Bytes::copy_from_slice(payload)).ok()?;
    if packet.s != 1 || packet.pid != 0 {
        return None;
    }
    let header = frame.get(..10)?;
    (header[0] & 1 == 0 && header[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| u16::from_le_bytes([header[6], header[7]]) & 0x3fff)
}

/// Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 §3.1).
fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0b11 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3F),
    };
    Some(frame * frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_samples_parse_with_whole_frame_durations() -> Result<(), MediaError> {
        for (video, min_frames) in [(Video::P360, 60), (Video::P720, 60)] {
            let media = Media::builtin(video)?;
            let stream = media.video.ok_or_else(|| parse_error("test", "no video"))?;
            assert!(stream.frames.len() >= min_frames);
            // 30 fps: every frame is 3000 ticks of 90 kHz, and its duration maps back exactly.
            assert!(stream.frames.iter().all(|f| f.ticks == 3000));
            let d = stream.duration(3000);
            assert_eq!((d.as_secs_f64() * 90_000.0) as u32, 3000);
        }
        let media = Media::builtin(Video::None)?;
        assert!(media.video.is_none());
        let simulcast = Media::builtin_simulcast()?;
        let rids: Vec<&str> = simulcast.layers.iter().map(|(rid, _)| *rid).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        // Each layer's first frame is a keyframe of its size, as a receiver reads it from
        // the RTP payload (a one-byte descriptor with S set before the frame).
        for ((_, stream), width) in simulcast.layers.iter().zip([320, 640, 1280]) {
            let mut payload = vec![0x10];
            payload.extend_from_slice(&stream.frames[0].data);
            assert_eq!(vp8_keyframe_width(&payload), Some(width));
            let mut delta = vec![0x10];
            delta.extend_from_slice(&stream.frames[1].data);
            assert_eq!(vp8_keyframe_width(&delta), None, "a delta frame");
            assert!(stream.frames.iter().all(|f| f.ticks == 3000));
        }
        // 20 ms Opus packets: 960 ticks of 48 kHz.
        let ticks: Vec<u32> = media.audio.frames.iter().map(|f| f.ticks).collect();
        assert!(ticks.iter().all(|t| *t == 960), "{ticks:?}");
        Ok(())
    }
}
