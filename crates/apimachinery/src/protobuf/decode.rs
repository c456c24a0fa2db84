//! The schema-driven walk from protobuf messages to JSON values, with the JSON forms of the
//! special types.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{Card, Field, Message, Presence, Special, Ty};
use super::table::MESSAGES;
use super::wire::{Payload, Reader, WireType};
use super::{MAX_DEPTH, ProtobufError};

/// Walks messages, counting the JSON values it produces against a budget.
pub(super) struct Decoder {
    /// Values produced so far.
    spent: usize,
    /// The most values allowed.
    limit: usize,
}

/// What the occurrences of one field amount to while a message is read.
enum Slot<'a> {
    /// The field did not occur.
    Absent,
    /// A singular scalar; the last occurrence wins.
    Scalar(Value),
    /// A singular message; occurrences merge, as if concatenated.
    Chunks(Vec<&'a [u8]>),
    /// A repeated field's elements.
    List(Vec<Value>),
    /// A map field's entries; a later entry replaces an earlier one with the same key. Sorted,
    /// as Go writes maps.
    Entries(BTreeMap<String, Value>),
}

impl Decoder {
    /// A decoder that fails once more than `limit` values have been produced.
    pub(super) fn new(limit: usize) -> Self {
        Self { spent: 0, limit }
    }

    /// Decodes the concatenation of `chunks` as `message`, at nesting `depth`.
    pub(super) fn message(
        &mut self,
        message: &'static Message,
        chunks: &[&[u8]],
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        if depth >= MAX_DEPTH {
            return Err(ProtobufError::TooDeep { limit: MAX_DEPTH });
        }
        self.spend()?;
        if message.special != Special::Object {
            return special(message, chunks);
        }
        let mut slots: Vec<Slot<'_>> = message.fields.iter().map(|_| Slot::Absent).collect();
        for chunk in chunks {
            let mut reader = Reader::new(chunk);
            while let Some((number, payload)) = reader.next_field()? {
                // Unknown fields are skipped, as protobuf readers do.
                let Some(index) = message.fields.iter().position(|f| f.tag == number) else {
                    continue;
                };
                let field = &message.fields[index];
                self.absorb(message, field, &mut slots[index], payload, depth)?;
            }
        }
        self.object(message, slots, depth)
    }

    /// Counts one produced value.
    fn spend(&mut self) -> Result<(), ProtobufError> {
        self.spent += 1;
        if self.spent > self.limit {
            return Err(ProtobufError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// Records one occurrence of `field`.
    fn absorb<'a>(
        &mut self,
        message: &'static Message,
        field: &'static Field,
        slot: &mut Slot<'a>,
        payload: Payload<'a>,
        depth: usize,
    ) -> Result<(), ProtobufError> {
        match field.card {
            Card::One => match field.ty {
                Ty::Msg(_) => {
                    let bytes = expect_len(message, field.tag, payload)?;
                    match slot {
                        Slot::Chunks(chunks) => chunks.push(bytes),
                        _ => *slot = Slot::Chunks(vec![bytes]),
                    }
                }
                ty => *slot = Slot::Scalar(self.scalar(message, field.tag, ty, payload)?),
            },
            Card::Rep => {
                let mut items = match std::mem::replace(slot, Slot::Absent) {
                    Slot::List(items) => items,
                    _ => Vec::new(),
                };
                match (field.ty, payload) {
                    (Ty::Msg(target), payload) => {
                        let bytes = expect_len(message, field.tag, payload)?;
                        items.push(self.message(target_of(target), &[bytes], depth + 1)?);
                    }
                    (Ty::Bool | Ty::I32 | Ty::I64 | Ty::F64, Payload::Len(packed)) => {
                        self.packed(message, field.tag, field.ty, packed, &mut items)?;
                    }
                    (ty, payload) => items.push(self.scalar(message, field.tag, ty, payload)?),
                }
                *slot = Slot::List(items);
            }
            Card::Map => {
                let mut entries = match std::mem::replace(slot, Slot::Absent) {
                    Slot::Entries(entries) => entries,
                    _ => BTreeMap::new(),
                };
                let entry = expect_len(message, field.tag, payload)?;
                let (key, value) = self.map_entry(message, field, entry, depth)?;
                entries.insert(key, value);
                *slot = Slot::Entries(entries);
            }
        }
        Ok(())
    }

    /// Decodes one map entry `{key = 1, value = 2}`; a missing key is `""`, a missing value
    /// the zero value of its type.
    fn map_entry(
        &mut self,
        message: &'static Message,
        field: &'static Field,
        entry: &[u8],
        depth: usize,
    ) -> Result<(String, Value), ProtobufError> {
        let mut key = String::new();
        let mut value: Option<Value> = None;
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut reader = Reader::new(entry);
        while let Some((number, payload)) = reader.next_field()? {
            match number {
                1 => key = lossy(expect_len(message, field.tag, payload)?),
                2 => match field.ty {
                    Ty::Msg(_) => chunks.push(expect_len(message, field.tag, payload)?),
                    ty => value = Some(self.scalar(message, field.tag, ty, payload)?),
                },
                _ => {}
            }
        }
        let value = match (field.ty, value) {
            (Ty::Msg(target), _) => self.message(target_of(target), &chunks, depth + 1)?,
            (_, Some(value)) => value,
            // Go starts each map value as `[]byte{}`, not nil.
            (Ty::Bytes, None) => Value::String(String::new()),
            (ty, None) => zero_scalar(ty),
        };
        Ok((key, value))
    }

    /// Decodes a packed run of numbers or booleans.
    fn packed(
        &mut self,
        message: &'static Message,
        tag: u32,
        ty: Ty,
        packed: &[u8],
        items: &mut Vec<Value>,
    ) -> Result<(), ProtobufError> {
        let mut reader = Reader::new(packed);
        while !reader.is_empty() {
            let payload = if ty == Ty::F64 {
                Payload::Fixed64(u64::from_le_bytes(reader.array::<8>()?))
            } else {
                Payload::Varint(reader.varint()?)
            };
            items.push(self.scalar(message, tag, ty, payload)?);
        }
        Ok(())
    }

    /// Converts one scalar occurrence to JSON.
    fn scalar(
        &mut self,
        message: &'static Message,
        tag: u32,
        ty: Ty,
        payload: Payload<'_>,
    ) -> Result<Value, ProtobufError> {
        self.spend()?;
        let expected = wire_type_of(ty);
        let value = match (ty, payload) {
            (Ty::Str, Payload::Len(bytes)) => Value::String(lossy(bytes)),
            (Ty::Bytes, Payload::Len(bytes)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            (Ty::Bool, Payload::Varint(v)) => Value::Bool(v != 0),
            // Protobuf's int32 is the low 32 bits of the varint (negative numbers are sent
            // sign-extended to 64 bits).
            (Ty::I32, Payload::Varint(v)) => Value::from(v as i32),
            (Ty::I64, Payload::Varint(v)) => Value::from(v as i64),
            (Ty::F64, Payload::Fixed64(bits)) => {
                let number = Number::from_f64(f64::from_bits(bits))
                    .ok_or_else(|| invalid(message, tag, "a double that is not a finite number"))?;
                Value::Number(number)
            }
            (_, payload) => {
                return Err(ProtobufError::WrongWireType {
                    message: message.name,
                    field: tag,
                    found: payload.wire_type().number(),
                    expected: expected.number(),
                });
            }
        };
        Ok(value)
    }

    /// Builds the JSON object of an ordinary message from its slots, as Go's `encoding/json`
    /// writes the decoded struct.
    fn object(
        &mut self,
        message: &'static Message,
        slots: Vec<Slot<'_>>,
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        let mut out = Map::new();
        for (field, slot) in message.fields.iter().zip(slots) {
            let present = !matches!(slot, Slot::Absent);
            match field.presence {
                Presence::Skip => {}
                Presence::Inline => {
                    if let Value::Object(inner) = self.value_or_zero(field, slot, depth)? {
                        out.extend(inner);
                    }
                }
                Presence::Ptr | Presence::PtrNull if !present => {
                    if field.presence == Presence::PtrNull {
                        out.insert(field.json.to_owned(), Value::Null);
                    }
                }
                Presence::Ptr | Presence::PtrNull => {
                    let value = self.value_or_zero(field, slot, depth)?;
                    out.insert(field.json.to_owned(), value);
                }
                Presence::Val | Presence::ValOmit => {
                    let value = self.value_or_zero(field, slot, depth)?;
                    if field.presence == Presence::ValOmit && omitted_when_empty(field, &value) {
                        continue;
                    }
                    out.insert(field.json.to_owned(), value);
                }
            }
        }
        Ok(Value::Object(out))
    }

    /// The field's value, or the JSON of its Go zero value when it did not occur.
    fn value_or_zero(
        &mut self,
        field: &'static Field,
        slot: Slot<'_>,
        depth: usize,
    ) -> Result<Value, ProtobufError> {
        Ok(match (field.card, field.ty, slot) {
            (Card::One, Ty::Msg(target), Slot::Chunks(chunks)) => {
                self.message(target_of(target), &chunks, depth + 1)?
            }
            (Card::One, Ty::Msg(target), _) => self.message(target_of(target), &[], depth + 1)?,
            (Card::One, _, Slot::Scalar(value)) => value,
            (Card::One, ty, _) => {
                self.spend()?;
                zero_scalar(ty)
            }
            (Card::Rep, _, Slot::List(items)) => Value::Array(items),
            (Card::Map, _, Slot::Entries(entries)) => Value::Object(entries.into_iter().collect()),
            // A nil slice or map.
            (Card::Rep | Card::Map, _, _) => Value::Null,
        })
    }
}

/// Whether Go's `omitempty` drops this value: false, 0, "", and nil or empty slices and maps.
/// Structs are never dropped, even when their JSON is `null` (a zero `metav1.Time`).
fn omitted_when_empty(field: &Field, value: &Value) -> bool {
    if let (Card::One, Ty::Msg(target)) = (field.card, field.ty)
        && target_of(target).special != Special::Items
    {
        return false;
    }
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(entries) => entries.is_empty(),
    }
}

/// The JSON of a scalar's Go zero value; a nil `[]byte` is `null`.
fn zero_scalar(ty: Ty) -> Value {
    match ty {
        Ty::Str => Value::String(String::new()),
        Ty::Bool => Value::Bool(false),
        Ty::I32 | Ty::I64 => Value::from(0),
        Ty::F64 => Value::from(0.0),
        Ty::Bytes | Ty::Msg(_) => Value::Null,
    }
}

/// The message a `Ty::Msg` index names. The generator only writes valid indices.
fn target_of(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

/// The wire type a field of this type uses (unpacked).
fn wire_type_of(ty: Ty) -> WireType {
    match ty {
        Ty::Str | Ty::Bytes | Ty::Msg(_) => WireType::Len,
        Ty::Bool | Ty::I32 | Ty::I64 => WireType::Varint,
        Ty::F64 => WireType::Fixed64,
    }
}

/// The bytes of a length-delimited occurrence, or a wire-type error.
fn expect_len<'a>(
    message: &'static Message,
    tag: u32,
    payload: Payload<'a>,
) -> Result<&'a [u8], ProtobufError> {
    match payload {
        Payload::Len(bytes) => Ok(bytes),
        other => Err(ProtobufError::WrongWireType {
            message: message.name,
            field: tag,
            found: other.wire_type().number(),
            expected: WireType::Len.number(),
        }),
    }
}

/// Text as Go's JSON encoder writes it: invalid UTF-8 becomes U+FFFD.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An [`ProtobufError::InvalidValue`].
fn invalid(message: &'static Message, tag: u32, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::InvalidValue {
        message: message.name,
        field: tag,
        reason: reason.into(),
    }
}

/// The last occurrences of fields 1 to 3 of a special message, and every occurrence of field 1
/// (for [`Special::Items`]), checked against the message's wire types.
struct SpecialFields<'a> {
    last: [Option<Payload<'a>>; 3],
    all_first: Vec<&'a [u8]>,
    any: bool,
}

impl<'a> SpecialFields<'a> {
    /// Reads the fields of `chunks`.
    fn read(message: &'static Message, chunks: &[&'a [u8]]) -> Result<Self, ProtobufError> {
        let mut out = Self {
            last: [None; 3],
            all_first: Vec::new(),
            any: false,
        };
        for chunk in chunks {
            out.any |= !chunk.is_empty();
            let mut reader = Reader::new(chunk);
            while let Some((number, payload)) = reader.next_field()? {
                let Some(field) = message.fields.iter().find(|f| f.tag == number) else {
                    continue;
                };
                let expected = wire_type_of(field.ty);
                if payload.wire_type() != expected {
                    return Err(ProtobufError::WrongWireType {
                        message: message.name,
                        field: number,
                        found: payload.wire_type().number(),
                        expected: expected.number(),
                    });
                }
                if let (1, Payload::Len(bytes)) = (number, payload) {
                    out.all_first.push(bytes);
                }
                if let Some(slot) = usize::try_from(number)
                    .ok()
                    .and_then(|n| out.last.get_mut(n.wrapping_sub(1)))
                {
                    *slot = Some(payload);
                }
            }
        }
        Ok(out)
    }

    /// Field `n` as a signed integer (0 when absent).
    fn int(&self, n: usize) -> i64 {
        match self.last[n - 1] {
            Some(Payload::Varint(v)) => v as i64,
            _ => 0,
        }
    }

    /// Field `n` as bytes, if present.
    fn bytes(&self, n: usize) -> Option<&'a [u8]> {
        match self.last[n - 1] {
            Some(Payload::Len(bytes)) => Some(bytes),
            _ => None,
        }
    }
}

/// The JSON form of a special message.
fn special(message: &'static Message, chunks: &[&[u8]]) -> Result<Value, ProtobufError> {
    let fields = SpecialFields::read(message, chunks)?;
    match message.special {
        Special::Time => {
            // Go reads an empty message as the zero time and drops nanoseconds otherwise.
            if !fields.any {
                return Ok(Value::Null);
            }
            format_time(fields.int(1), 0, false).map_err(|reason| invalid(message, 1, reason))
        }
        Special::MicroTime => {
            if !fields.any {
                return Ok(Value::Null);
            }
            // The low 32 bits are the int32 nanos; Go truncates them to microseconds.
            let nanos = i64::from(fields.int(2) as i32);
            let nanos = nanos - nanos % 1000;
            format_time(fields.int(1), nanos, true).map_err(|reason| invalid(message, 1, reason))
        }
        Special::Duration => Ok(Value::String(go_duration(fields.int(1)))),
        Special::IntOrString => match fields.int(1) {
            0 => Ok(Value::from(fields.int(2) as i32)),
            1 => Ok(Value::String(lossy(fields.bytes(3).unwrap_or_default()))),
            other => Err(invalid(
                message,
                1,
                format!("IntOrString type {other} is neither 0 (int) nor 1 (string)"),
            )),
        },
        Special::Quantity => match fields.bytes(1) {
            None => Ok(Value::String("0".into())),
            Some([]) => Err(invalid(message, 1, "empty quantity")),
            Some(text) => Ok(Value::String(lossy(text))),
        },
        Special::RawJson => match fields.bytes(1) {
            None => Ok(Value::Null),
            Some(raw) => serde_json::from_slice(raw)
                .map_err(|e| invalid(message, 1, format!("embedded bytes are not JSON: {e}"))),
        },
        Special::Items => {
            if fields.all_first.is_empty() {
                return Ok(Value::Null);
            }
            let items = fields.all_first.iter().map(|b| Value::String(lossy(b)));
            Ok(Value::Array(items.collect()))
        }
        Special::Object => Ok(Value::Object(Map::new())),
    }
}

/// Seconds since 0001-01-01T00:00:00Z at the Unix epoch; Go's zero time.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Formats `seconds` + `nanos` since the Unix epoch as RFC 3339 in UTC, with six fraction
/// digits when `micro`, as `metav1.Time` and `metav1.MicroTime` marshal. Go's zero time is
/// `null`.
fn format_time(seconds: i64, nanos: i64, micro: bool) -> Result<Value, String> {
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    if total == i128::from(GO_ZERO_TIME_SECONDS) * 1_000_000_000 {
        return Ok(Value::Null);
    }
    let timestamp = jiff::Timestamp::from_nanosecond(total)
        .map_err(|_| format!("time {seconds}s {nanos}ns is out of range"))?;
    let civil = jiff::tz::Offset::UTC.to_datetime(timestamp);
    if civil.year() < 1 {
        return Err(format!("time {seconds}s {nanos}ns is before year 1"));
    }
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
    if micro {
        text.push_str(&format!(".{:06}", civil.subsec_nanosecond() / 1000));
    }
    text.push('Z');
    Ok(Value::String(text))
}

/// Formats nanoseconds as Go's `time.Duration.String` does: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let sign = if nanos < 0 { "-" } else { "" };
    if u == 0 {
        return "0s".into();
    }
    if u < 1_000_000_000 {
        let (digits, unit) = match u {
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let scale = 10u64.pow(digits);
        return format!("{sign}{}{}{unit}", u / scale, fraction(u % scale, digits));
    }
    let frac = fraction(u % 1_000_000_000, 9);
    u /= 1_000_000_000;
    let mut out = format!("{}{frac}s", u % 60);
    u /= 60;
    if u > 0 {
        out = format!("{}m{out}", u % 60);
        u /= 60;
        if u > 0 {
            out = format!("{u}h{out}");
        }
    }
    format!("{sign}{out}")
}

/// `.ddd` for `value / 10^digits` without trailing zeros, or nothing when `value` is zero.
fn fraction(value: u64, digits: u32) -> String {
    if value == 0 {
        return String::new();
    }
    let padded = format!("{value:0width$}", width = digits as usize);
    format!(".{}", padded.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(go_duration(nanos), expected, "{nanos}ns");
        }
    }

    #[test]
    fn times_format_like_metav1() {
        assert_eq!(
            format_time(1_704_164_645, 0, false),
            Ok(Value::String("2024-01-02T03:04:05Z".into()))
        );
        assert_eq!(
            format_time(1_704_164_645, 123_456_000, true),
            Ok(Value::String("2024-01-02T03:04:05.123456Z".into()))
        );
        assert_eq!(
            format_time(0, 0, false),
            Ok(Value::String("1970-01-01T00:00:00Z".into()))
        );
        assert_eq!(format_time(GO_ZERO_TIME_SECONDS, 0, false), Ok(Value::Null));
        assert!(format_time(i64::MAX, 0, false).is_err());
        assert!(format_time(GO_ZERO_TIME_SECONDS - 1, 0, false).is_err());
    }
}
