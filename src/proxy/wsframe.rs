//! WebSocket frame boundaries in a tunnel's byte stream (RFC 6455 section
//! 5.2), tracked without buffering: a few bytes of state per direction say
//! how far the current frame still runs, so a drain can let that frame finish
//! and then inject a close frame without corrupting a message in flight.
//!
//! Control frames may be injected between the fragments of a fragmented
//! message (RFC 6455 section 5.4: "Control frames MAY be injected in the
//! middle of a fragmented message"), so a frame boundary is enough.

/// Where the parser stands inside the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Expecting the first header byte (FIN, RSV, opcode).
    Start,
    /// Expecting the second header byte (MASK, payload length 7).
    Len,
    /// Reading `n` more bytes of the extended payload length.
    ExtLen,
    /// Skipping `n` more bytes of the masking key.
    Mask,
    /// Skipping `left` more payload bytes.
    Payload,
}

/// One direction's frame position: 16 bytes.
#[derive(Clone, Copy, Debug)]
pub struct FrameTracker {
    left: u64,
    stage: Stage,
    /// Bytes still to come of the extended length or the masking key.
    n: u8,
    /// Low nibble: the current frame's opcode; bit 4: masked; bit 5: a close
    /// frame has passed completely.
    flags: u8,
}

const MASKED: u8 = 0x10;
const CLOSE_SEEN: u8 = 0x20;
const OP_CLOSE: u8 = 0x8;

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            left: 0,
            stage: Stage::Start,
            n: 0,
            flags: 0,
        }
    }
}

impl FrameTracker {
    /// Takes note of bytes that passed this way.
    pub fn consume(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.stage == Stage::Payload {
                let skip = self.left.min(bytes.len() as u64);
                self.left -= skip;
                bytes = &bytes[skip as usize..];
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            match self.stage {
                Stage::Start => {
                    self.flags = (self.flags & CLOSE_SEEN) | (b & 0x0f);
                    self.stage = Stage::Len;
                }
                Stage::Len => {
                    if b & 0x80 != 0 {
                        self.flags |= MASKED;
                    }
                    match b & 0x7f {
                        126 => self.begin_ext(2),
                        127 => self.begin_ext(8),
                        len => {
                            self.left = u64::from(len);
                            self.after_len();
                        }
                    }
                }
                Stage::ExtLen => {
                    self.left = (self.left << 8) | u64::from(b);
                    self.n -= 1;
                    if self.n == 0 {
                        self.after_len();
                    }
                }
                Stage::Mask => {
                    self.n -= 1;
                    if self.n == 0 {
                        self.begin_payload();
                    }
                }
                Stage::Payload => {}
            }
        }
    }

    fn begin_ext(&mut self, n: u8) {
        self.left = 0;
        self.n = n;
        self.stage = Stage::ExtLen;
    }

    fn after_len(&mut self) {
        if self.flags & MASKED != 0 {
            self.n = 4;
            self.stage = Stage::Mask;
        } else {
            self.begin_payload();
        }
    }

    fn begin_payload(&mut self) {
        self.stage = Stage::Payload;
        if self.left == 0 {
            self.end_frame();
        }
    }

    fn end_frame(&mut self) {
        if self.flags & 0x0f == OP_CLOSE {
            self.flags |= CLOSE_SEEN;
        }
        self.flags &= CLOSE_SEEN;
        self.stage = Stage::Start;
    }

    /// True between frames: a frame may be injected here.
    pub fn at_boundary(&self) -> bool {
        self.stage == Stage::Start
    }

    /// Bytes the current frame needs at least before it can end (0 at a
    /// boundary); reading no more than this never crosses into the next frame.
    pub fn at_least_left(&self) -> u64 {
        match self.stage {
            Stage::Start => 0,
            Stage::Len => 1,
            Stage::ExtLen | Stage::Mask => u64::from(self.n),
            Stage::Payload => self.left,
        }
    }

    /// A complete close frame has passed this way.
    pub fn close_seen(&self) -> bool {
        self.flags & CLOSE_SEEN != 0
    }
}

/// Both directions of a WebSocket tunnel.
#[derive(Clone, Copy, Debug, Default)]
pub struct WsFrames {
    pub c2u: FrameTracker,
    pub u2c: FrameTracker,
}

impl WsFrames {
    /// Starts tracking, taking the bytes already read past the handshake.
    pub fn new(client_pending: &[u8], upstream_pending: &[u8]) -> WsFrames {
        let mut f = WsFrames::default();
        f.c2u.consume(client_pending);
        f.u2c.consume(upstream_pending);
        f
    }
}

/// Close status 1001: "an endpoint is going away, such as a server going
/// down" (RFC 6455 section 7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// A close frame with `code` and `reason` (at most 123 bytes, so the payload
/// fits a control frame). With `mask`, the frame is masked with that key, as
/// a client must mask every frame it sends (RFC 6455 section 5.3).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut out = Vec::with_capacity(6 + payload.len());
    out.push(0x80 | OP_CLOSE);
    match mask {
        Some(key) => {
            out.push(0x80 | payload.len() as u8);
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => {
            out.push(payload.len() as u8);
            out.extend_from_slice(&payload);
        }
    }
    out
}

/// A masking key that a peer cannot predict from earlier traffic: RFC 6455
/// asks for one from a strong source; the standard library's randomly seeded
/// hasher is enough for a one-off close frame.
pub fn mask_key() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() as u32).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(op: u8, len: usize, mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | op];
        let m = if mask { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len < 65536 {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn boundaries_of_every_length_form_byte_by_byte() {
        for (len, mask) in [
            (0, false),
            (5, true),
            (125, false),
            (300, true),
            (70000, false),
        ] {
            let f = frame(1, len, mask);
            let mut t = FrameTracker::default();
            for (i, b) in f.iter().enumerate() {
                assert!(t.at_boundary() == (i == 0), "len {len} at {i}");
                assert!(t.at_least_left() > 0 || i == 0);
                t.consume(std::slice::from_ref(b));
            }
            assert!(t.at_boundary(), "len {len}");
        }
    }

    #[test]
    fn several_frames_in_one_read_and_split_reads() {
        let mut bytes = frame(1, 200, true);
        bytes.extend(frame(2, 3, true));
        bytes.extend(frame(9, 0, true));
        let mut t = FrameTracker::default();
        t.consume(&bytes);
        assert!(t.at_boundary());
        let mut t = FrameTracker::default();
        t.consume(&bytes[..100]);
        assert!(!t.at_boundary());
        assert_eq!(t.at_least_left(), 200 - (100 - 8));
        t.consume(&bytes[100..]);
        assert!(t.at_boundary());
        assert!(!t.close_seen());
    }

    #[test]
    fn a_close_frame_is_noticed_once_complete() {
        let f = close_frame(1000, "bye", None);
        let mut t = FrameTracker::default();
        t.consume(&f[..f.len() - 1]);
        assert!(!t.close_seen());
        t.consume(&f[f.len() - 1..]);
        assert!(t.close_seen() && t.at_boundary());
    }

    #[test]
    fn masked_close_frame_unmasks_to_the_code() {
        let key = [0xa1, 0x02, 0xf3, 0x44];
        let f = close_frame(GOING_AWAY, "going away", Some(key));
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1], 0x80 | 12);
        assert_eq!(&f[2..6], &key);
        let plain: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(&plain[..2], &1001u16.to_be_bytes());
        assert_eq!(&plain[2..], b"going away");
        let mut t = FrameTracker::default();
        t.consume(&f);
        assert!(t.close_seen());
    }
}
