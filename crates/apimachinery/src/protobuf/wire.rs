//! The protobuf wire format: a reader over tagged fields of one message.

use super::ProtobufError;

/// The wire type of a field, from the low three bits of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WireType {
    /// 0: a base-128 varint.
    Varint,
    /// 1: eight little-endian bytes.
    Fixed64,
    /// 2: a varint length, then that many bytes.
    Len,
    /// 5: four little-endian bytes.
    Fixed32,
}

impl WireType {
    /// The number protobuf gives this wire type.
    pub(super) fn number(self) -> u8 {
        match self {
            Self::Varint => 0,
            Self::Fixed64 => 1,
            Self::Len => 2,
            Self::Fixed32 => 5,
        }
    }
}

/// The payload of one field occurrence.
#[derive(Clone, Copy, Debug)]
pub(super) enum Payload<'a> {
    /// A varint's value.
    Varint(u64),
    /// A fixed 64-bit value.
    Fixed64(u64),
    /// Length-delimited bytes.
    Len(&'a [u8]),
    /// A fixed 32-bit value (no field of the built-in API uses one; it is only skipped).
    Fixed32,
}

impl Payload<'_> {
    /// The wire type this payload came with.
    pub(super) fn wire_type(&self) -> WireType {
        match self {
            Self::Varint(_) => WireType::Varint,
            Self::Fixed64(_) => WireType::Fixed64,
            Self::Len(_) => WireType::Len,
            Self::Fixed32 => WireType::Fixed32,
        }
    }
}

/// Iterates over the fields of one encoded message.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next field as `(number, payload)`, or `None` at the end of the message.
    pub(super) fn next_field(&mut self) -> Result<Option<(u32, Payload<'a>)>, ProtobufError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key_offset = self.pos;
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(MAX_FIELD_NUMBER) {
            return Err(ProtobufError::InvalidFieldNumber {
                offset: key_offset,
                number,
            });
        }
        // The range check above makes this conversion lossless.
        let number = number as u32;
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Fixed64(u64::from_le_bytes(self.array::<8>()?)),
            2 => {
                let len_offset = self.pos;
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= self.data.len() - self.pos)
                    .ok_or(ProtobufError::Truncated { offset: len_offset })?;
                let bytes = &self.data[self.pos..self.pos + len];
                self.pos += len;
                Payload::Len(bytes)
            }
            5 => {
                self.array::<4>()?;
                Payload::Fixed32
            }
            wire_type => {
                return Err(ProtobufError::UnsupportedWireType {
                    offset: key_offset,
                    // Masked to three bits above.
                    wire_type: wire_type as u8,
                });
            }
        };
        Ok(Some((number, payload)))
    }

    /// Reads a base-128 varint of at most ten bytes.
    pub(super) fn varint(&mut self) -> Result<u64, ProtobufError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(ProtobufError::Truncated { offset: start });
            };
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(ProtobufError::VarintOverflow { offset: start });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintOverflow { offset: start })
    }

    /// Whether every byte has been read.
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Reads `N` bytes.
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtobufError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + N)
            .ok_or(ProtobufError::Truncated { offset: self.pos })?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_reject_overflow() {
        assert_eq!(Reader::new(&[0x96, 0x01]).varint(), Ok(150));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).varint(),
            Ok(u64::MAX)
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint(),
            Err(ProtobufError::VarintOverflow { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0xff; 11]).varint(),
            Err(ProtobufError::VarintOverflow { offset: 0 })
        );
        assert_eq!(
            Reader::new(&[0x96]).varint(),
            Err(ProtobufError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn fields_are_read_in_order() {
        // 1: varint 1; 2: "hi"; 3: fixed64; 4: fixed32.
        let data = [
            0x08, 0x01, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0, 0,
        ];
        let mut reader = Reader::new(&data);
        let mut seen = Vec::new();
        while let Some((number, payload)) = reader.next_field().unwrap() {
            seen.push((number, payload.wire_type().number()));
        }
        assert_eq!(seen, vec![(1, 0), (2, 2), (3, 1), (4, 5)]);
        assert!(reader.is_empty());
    }

    #[test]
    fn bad_keys_and_lengths_are_errors() {
        assert_eq!(
            Reader::new(&[0x00]).next_field().err(),
            Some(ProtobufError::InvalidFieldNumber {
                offset: 0,
                number: 0
            })
        );
        assert_eq!(
            Reader::new(&[0x0b]).next_field().err(),
            Some(ProtobufError::UnsupportedWireType {
                offset: 0,
                wire_type: 3
            })
        );
        assert_eq!(
            Reader::new(&[0x12, 0x05, b'a']).next_field().err(),
            Some(ProtobufError::Truncated { offset: 1 })
        );
        assert_eq!(
            Reader::new(&[0x19, 1, 2]).next_field().err(),
            Some(ProtobufError::Truncated { offset: 1 })
        );
    }
}
