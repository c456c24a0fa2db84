//! SPDY/3.1 frames and their wire codec, including zlib header-block compression.
//!
//! Every frame starts with an 8-byte header.
//! Control frames: `1 | version(15) | type(16) | flags(8) | length(24)`.
//! Data frames: `0 | stream-id(31) | flags(8) | length(24)`.
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with the SPDY/3
//! dictionary; each direction of a session keeps ONE compression context for its whole life,
//! and every block ends with a SYNC_FLUSH so the peer can decode it on its own.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::DICTIONARY;
use crate::{Error, Headers};

/// The SPDY protocol version this crate speaks.
pub const VERSION: u16 = 3;
/// The largest payload a frame's 24-bit length field can describe.
pub const MAX_FRAME_LEN: usize = 0x00ff_ffff;
/// The largest decompressed header block accepted; protects against zlib bombs.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Flag on DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender will send nothing more.
pub const FLAG_FIN: u8 = 0x01;
/// Flag on SYN_STREAM: the recipient may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 section 2.6.3).
pub mod rst {
    /// A generic error; the stream is torn down.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A frame arrived for a stream that is not active.
    pub const INVALID_STREAM: u32 = 2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The creator of the stream no longer needs it.
    pub const CANCEL: u32 = 5;
    /// A generic internal error.
    pub const INTERNAL_ERROR: u32 = 6;
    /// A frame arrived for a stream that is already half-closed.
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Per-entry flags (persist value, persisted).
    pub flags: u8,
    /// The 24-bit setting id.
    pub id: u32,
    /// The setting's value.
    pub value: u32,
}

/// A decoded SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream payload.
    Data {
        /// The stream the bytes belong to.
        stream_id: u32,
        /// The sender's half of the stream ends with this frame.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// Opens a stream.
    SynStream {
        /// The new stream's id: odd when the client opens it, even when the server does.
        stream_id: u32,
        /// The stream this one is associated with, or 0.
        associated_to: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// The opener sends nothing after this frame.
        fin: bool,
        /// The recipient may not send on this stream.
        unidirectional: bool,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream the peer opened.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// The replier sends nothing after this frame.
        fin: bool,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: u32,
        /// Why, see [`rst`].
        status: u32,
    },
    /// Session parameters.
    Settings {
        /// The settings, in wire order.
        entries: Vec<Setting>,
    },
    /// Liveness check; the receiver echoes pings the peer initiated.
    Ping {
        /// Odd ids come from the client, even ids from the server.
        id: u32,
    },
    /// The sender accepts no more streams and is ending the session.
    GoAway {
        /// The last peer-initiated stream the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// Extra headers for an open stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// The sender's half of the stream ends with this frame.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit for a stream (or the whole session when `stream_id` is 0).
    WindowUpdate {
        /// The stream, or 0 for the session.
        stream_id: u32,
        /// Extra bytes the peer may send.
        delta: u32,
    },
    /// A control frame of a type this crate does not know; SPDY says to ignore it.
    Unknown {
        /// The frame type.
        frame_type: u16,
    },
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// Decodes frames from bytes; owns the receive direction's zlib context.
pub struct FrameDecoder {
    inflate: Decompress,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder {
            inflate: Decompress::new(true),
        }
    }
}

impl FrameDecoder {
    /// Takes one complete frame off the front of `src`, or returns `None` when more bytes are needed.
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if src.len() < 8 {
            return Ok(None);
        }
        // Reject a bad version before waiting for a (possibly huge) payload.
        let version = u16::from_be_bytes([src[0], src[1]]) & 0x7fff;
        if src[0] & 0x80 != 0 && version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        let length = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
        if src.len() < 8 + length {
            src.reserve(8 + length - src.len());
            return Ok(None);
        }
        let mut head = src.split_to(8);
        let payload = src.split_to(length).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            let stream_id = first & 0x7fff_ffff;
            if stream_id == 0 {
                return Err(protocol("DATA frame on stream 0"));
            }
            let fin = flags & FLAG_FIN != 0;
            return Ok(Some(Frame::Data {
                stream_id,
                fin,
                data: payload,
            }));
        }
        let frame_type = (first & 0xffff) as u16;
        self.decode_control(frame_type, flags, payload).map(Some)
    }

    fn decode_control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, Error> {
        let fin = flags & FLAG_FIN != 0;
        let need = |p: &Bytes, n: usize, exact: bool| {
            let ok = if exact { p.len() == n } else { p.len() >= n };
            if ok {
                Ok(())
            } else {
                Err(protocol(format!(
                    "control frame type {frame_type} has bad length {}",
                    p.len()
                )))
            }
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                need(&p, 10, false)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _credential_slot = p.get_u8();
                let headers = self.decode_headers(&p)?;
                nonzero(stream_id, "SYN_STREAM")?;
                let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&p, 4, false)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.decode_headers(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    nonzero(stream_id, "SYN_REPLY")?;
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    nonzero(stream_id, "HEADERS")?;
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&p, 8, true)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let status = p.get_u32();
                nonzero(stream_id, "RST_STREAM")?;
                Frame::RstStream { stream_id, status }
            }
            TYPE_SETTINGS => {
                need(&p, 4, false)?;
                let count = p.get_u32() as usize;
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(protocol("SETTINGS entry count does not match its length"));
                }
                let entries = (0..count)
                    .map(|_| {
                        let flags_id = p.get_u32();
                        Setting {
                            flags: (flags_id >> 24) as u8,
                            id: flags_id & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { entries }
            }
            TYPE_PING => {
                need(&p, 4, true)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need(&p, 8, true)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&p, 8, true)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            frame_type => Frame::Unknown { frame_type },
        };
        Ok(frame)
    }

    /// Inflates one header block with the session's receive context and parses it.
    fn decode_headers(&mut self, compressed: &[u8]) -> Result<Headers, Error> {
        let block = self.inflate_block(compressed)?;
        parse_header_block(&block)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(protocol("header block too large"));
                }
                out.reserve(out.len().min(MAX_HEADER_BLOCK - out.len()));
            }
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - in_before) as usize;
            let progressed =
                self.inflate.total_in() != in_before || self.inflate.total_out() != out_before;
            match result {
                Ok(Status::Ok) | Ok(Status::BufError) => {
                    let output_room_left = out.len() < out.capacity();
                    if consumed == input.len() && output_room_left {
                        return Ok(out);
                    }
                    if !progressed && output_room_left {
                        return Err(protocol("corrupt header block"));
                    }
                }
                Ok(Status::StreamEnd) => return Err(protocol("header compression stream ended")),
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| protocol(format!("header dictionary rejected: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("corrupt header block: {e}"))),
            }
        }
    }
}

fn nonzero(stream_id: u32, what: &str) -> Result<(), Error> {
    if stream_id == 0 {
        Err(protocol(format!("{what} on stream 0")))
    } else {
        Ok(())
    }
}

/// Parses a decompressed name/value block: `count(32)` then `len(32) name len(32) value` pairs.
fn parse_header_block(mut block: &[u8]) -> Result<Headers, Error> {
    fn take<'a>(block: &mut &'a [u8]) -> Result<&'a [u8], Error> {
        if block.len() < 4 {
            return Err(protocol("truncated header block"));
        }
        let len = block.get_u32() as usize;
        if block.len() < len {
            return Err(protocol("truncated header block"));
        }
        let (field, rest) = block.split_at(len);
        *block = rest;
        Ok(field)
    }
    if block.len() < 4 {
        return Err(protocol("truncated header block"));
    }
    let count = block.get_u32() as usize;
    if count > block.len() / 8 {
        return Err(protocol("header count exceeds header block"));
    }
    let mut headers = Headers::new();
    let mut seen: Vec<String> = Vec::with_capacity(count);
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut block)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(take(&mut block)?).into_owned();
        if seen.contains(&name) {
            return Err(protocol(format!("duplicate header {name:?}")));
        }
        for part in value.split('\0') {
            headers.append(&name, part);
        }
        seen.push(name);
    }
    if !block.is_empty() {
        return Err(protocol("trailing bytes after header block"));
    }
    Ok(headers)
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        self.decode_frame(src)
    }
}

/// Encodes frames to bytes; owns the send direction's zlib context.
pub struct FrameEncoder {
    deflate: Compress,
}

impl Default for FrameEncoder {
    fn default() -> FrameEncoder {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(&DICTIONARY)
            .expect("a fresh zlib stream accepts a dictionary");
        FrameEncoder { deflate }
    }
}

impl FrameEncoder {
    /// Appends the wire form of `frame` to `dst`.
    pub fn encode_frame(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_FRAME_LEN {
                    return Err(protocol("DATA payload too large"));
                }
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(u32::from(flag(*fin, FLAG_FIN)) << 24 | data.len() as u32);
                dst.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                control_header(dst, TYPE_SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(associated_to & 0x7fff_ffff);
                dst.put_u8((priority & 0x7) << 5);
                dst.put_u8(0);
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = self.compress_headers(headers)?;
                control_header(dst, frame_type, flag(*fin, FLAG_FIN), 4 + block.len())?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(dst, TYPE_RST_STREAM, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::Settings { entries } => {
                control_header(dst, TYPE_SETTINGS, 0, 4 + 8 * entries.len())?;
                dst.put_u32(entries.len() as u32);
                for entry in entries {
                    dst.put_u32(u32::from(entry.flags) << 24 | (entry.id & 0x00ff_ffff));
                    dst.put_u32(entry.value);
                }
            }
            Frame::Ping { id } => {
                control_header(dst, TYPE_PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(dst, TYPE_GOAWAY, 0, 8)?;
                dst.put_u32(last_good_stream_id & 0x7fff_ffff);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(dst, TYPE_WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream_id & 0x7fff_ffff);
                dst.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Unknown { frame_type } => control_header(dst, *frame_type, 0, 0)?,
        }
        Ok(())
    }

    /// Serializes and deflates one header block, ending with a SYNC_FLUSH.
    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let groups = headers.grouped();
        let mut raw = Vec::new();
        raw.put_u32(groups.len() as u32);
        for (name, values) in groups {
            let value = values.join("\0");
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let in_before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| protocol(format!("header compression failed: {e}")))?;
            consumed += (self.deflate.total_in() - in_before) as usize;
            // The sync flush is complete once all input is taken and zlib left output room unused.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn control_header(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), Error> {
    if length > MAX_FRAME_LEN {
        return Err(protocol("control frame too large"));
    }
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32(u32::from(flags) << 24 | length as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) {
        let mut encoder = FrameEncoder::default();
        let mut decoder = FrameDecoder::default();
        let mut wire = BytesMut::new();
        for frame in frames {
            encoder.encode_frame(frame, &mut wire).unwrap();
        }
        // Feed the bytes one at a time to exercise partial frames.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = decoder.decode_frame(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert!(buf.is_empty());
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn every_frame_type_roundtrips_with_one_shared_zlib_context() {
        let h1 = headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
        let h2 = headers(&[
            ("streamtype", "data"),
            ("port", "80"),
            ("requestid", "0"),
            ("x", "a"),
            ("x", ""),
        ]);
        roundtrip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: h1.clone(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: h2.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 3,
                fin: true,
                headers: h1,
            },
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 32768,
            },
            Frame::SynReply {
                stream_id: 5,
                fin: false,
                headers: h2,
            },
        ]);
    }

    #[test]
    fn data_frame_wire_layout() {
        let mut wire = BytesMut::new();
        let frame = Frame::Data {
            stream_id: 5,
            fin: true,
            data: Bytes::from_static(b"ab"),
        };
        FrameEncoder::default()
            .encode_frame(&frame, &mut wire)
            .unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn control_frame_wire_layout() {
        let mut wire = BytesMut::new();
        let frame = Frame::RstStream {
            stream_id: 7,
            status: rst::CANCEL,
        };
        FrameEncoder::default()
            .encode_frame(&frame, &mut wire)
            .unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 5]
        );
    }

    #[test]
    fn header_block_is_a_zlib_stream_with_the_spdy_dictionary() {
        let mut wire = BytesMut::new();
        let frame = Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: headers(&[("a", "b")]),
        };
        FrameEncoder::default()
            .encode_frame(&frame, &mut wire)
            .unwrap();
        let block = &wire[12..];
        // CMF/FLG with FDICT set, then the Adler-32 of the dictionary (zlib's well-known SPDY/3 dict id).
        assert_eq!(block[0] & 0x0f, 8, "deflate method");
        assert_ne!(block[1] & 0x20, 0, "FDICT flag");
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
        // A SYNC_FLUSH ends with an empty stored block.
        assert_eq!(&block[block.len() - 4..], &[0, 0, 0xff, 0xff]);
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        let cases: &[&[u8]] = &[
            &[0x80, 2, 0, 1, 0, 0, 0, 0],             // SPDY/2
            &[0, 0, 0, 0, 0, 0, 0, 0],                // DATA on stream 0
            &[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1], // short RST_STREAM
            &[
                0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
            ], // garbage header block
            &[0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9], // SETTINGS count mismatch
        ];
        for case in cases {
            let mut buf = BytesMut::from(*case);
            assert!(
                FrameDecoder::default().decode_frame(&mut buf).is_err(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut buf = BytesMut::from(
            &[
                0x80, 3, 0, 10, 0, 0, 0, 2, 9, 9, 0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2,
            ][..],
        );
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.decode_frame(&mut buf).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
        assert_eq!(
            decoder.decode_frame(&mut buf).unwrap(),
            Some(Frame::Ping { id: 2 })
        );
    }
}
