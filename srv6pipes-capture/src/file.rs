//! pcap files, read with the `pcap` crate and decoded frame by frame with [`crate::frame`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::frame::{decode_frame, DecodeError, Frame, LinkType, Packet};

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened as a pcap file.
    #[error("{path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// libpcap's reason.
        source: pcap::Error,
    },
    /// The file's link type is not one the decoder reads.
    #[error("{path}: link type {linktype} is not Ethernet, Linux cooked (SLL, SLL2) or raw IP")]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The pcap `LINKTYPE_*` number.
        linktype: i32,
    },
    /// Reading the next record failed (a record cut short, an I/O error).
    #[error("{path}: after frame {frame}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The last frame read whole.
        frame: usize,
        /// libpcap's reason.
        source: pcap::Error,
    },
    /// A frame did not decode ([`read_pcap`] only; [`PcapFile`] hands such frames out).
    #[error("{path}: frame {frame}: {source}")]
    Frame {
        /// The file.
        path: PathBuf,
        /// The frame's 1-based number.
        frame: usize,
        /// What was wrong with it.
        source: DecodeError,
    },
}

/// An open pcap file: an iterator over its frames, each decoded.
pub struct PcapFile {
    capture: pcap::Capture<pcap::Offline>,
    link: LinkType,
    path: PathBuf,
    frame: usize,
}

impl PcapFile {
    /// Open `path`; refuses link types other than those of [`LinkType`].
    pub fn open(path: &Path) -> Result<PcapFile, CaptureError> {
        let capture =
            pcap::Capture::from_file(path).map_err(|source| CaptureError::Open { path: path.to_owned(), source })?;
        let linktype = capture.get_datalink().0;
        let link = LinkType::from_pcap(linktype).ok_or(CaptureError::LinkType { path: path.to_owned(), linktype })?;
        Ok(PcapFile { capture, link, path: path.to_owned(), frame: 0 })
    }

    /// The file's link type.
    pub fn link(&self) -> LinkType {
        self.link
    }
}

impl Iterator for PcapFile {
    /// A frame, decoded (malformed frames included, for the caller to count), or why reading stopped.
    type Item = Result<Frame, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.capture.next_packet() {
            Ok(p) => {
                self.frame += 1;
                Some(Ok(decode_packet(self.link, self.frame, &p)))
            }
            Err(pcap::Error::NoMorePackets) => None,
            Err(source) => Some(Err(CaptureError::Read { path: self.path.clone(), frame: self.frame, source })),
        }
    }
}

/// Decode frame number `frame` as libpcap handed it over (from a file or a live capture): its capture time
/// and length on the wire come from the record header.
pub fn decode_packet(link: LinkType, frame: usize, p: &pcap::Packet<'_>) -> Frame {
    let ts = Duration::new(
        u64::try_from(p.header.ts.tv_sec).unwrap_or(0),
        u32::try_from(p.header.ts.tv_usec).unwrap_or(0).min(999_999) * 1000,
    );
    decode_frame(link, frame, ts, p.header.len, p.data)
}

/// Every IPv6 packet of the pcap file at `path`, strictly: a frame that does not decode, or an IPv6 packet
/// with a malformed layer, is an error naming the frame. Frames that are not IPv6 are skipped (their numbers
/// are kept by the others).
pub fn read_pcap(path: &Path) -> Result<Vec<Packet>, CaptureError> {
    let mut packets = Vec::new();
    for frame in PcapFile::open(path)? {
        let fail = |frame, source| CaptureError::Frame { path: path.to_owned(), frame, source };
        match frame? {
            Frame::Ipv6(Packet { frame, malformed: Some(e), .. }) => return Err(fail(frame, e)),
            Frame::Ipv6(p) => packets.push(p),
            Frame::NotIpv6 => {}
            Frame::Undecodable { frame, error } => return Err(fail(frame, error)),
        }
    }
    Ok(packets)
}
