//! JSON to request messages and response messages to JSON, by the proto3
//! JSON mapping (prost-reflect's serde support, which passes protobuf's
//! conformance suite).
//!
//! A request message is built from three sources, in this order: the body
//! (as the binding's `body` says: `*` the whole message, a field name that
//! field, none no body at all), then the path variables, then the query
//! parameters. A path variable may repeat a field the body also sets only
//! with the same value. Query parameters name leaf fields by proto or JSON
//! name, dotted through nested messages (`?shelf.id=7`); a repeated field
//! repeats the parameter (`?tag=a&tag=b`); enums take names or numbers,
//! `bool` `true`/`false`, 64-bit integers and bytes (base64) strings, and
//! `Timestamp`, `Duration`, `FieldMask`, the wrappers, `Struct`, `Value`
//! and `ListValue` their JSON forms. A parameter the message does not have
//! is refused (unless `ignore_unknown`), as is one naming a field the path
//! or body already binds (with `body: "*"` the body binds them all). Every
//! error names the field.
//!
//! The response side renders a message, or its `response_body` field,
//! with the route's [`JsonOptions`] (64-bit integers as strings, always).

use bytes::Bytes;
use portico_shared::grpc::bindings::{Binding, BodySelector};
use portico_shared::grpc::http_rule::Capture;
use prost_reflect::prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions, Value};
use serde_json::json;

use super::error::TranscodeError;

/// How JSON is read and written on a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Write proto field names (`page_size`), not lowerCamelCase JSON names (`pageSize`).
    pub proto_names: bool,
    /// Write fields that hold their default value.
    pub emit_defaults: bool,
    /// Write enums as numbers, not names.
    pub enums_as_ints: bool,
    /// Ignore unknown JSON fields and query parameters instead of answering `400`.
    pub ignore_unknown: bool,
}

impl JsonOptions {
    pub fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .use_proto_field_name(self.proto_names)
            .skip_default_fields(!self.emit_defaults)
            .use_enum_numbers(self.enums_as_ints)
            .stringify_64_bit_integers(true)
    }

    fn deserialize_options(&self) -> DeserializeOptions {
        DeserializeOptions::new().deny_unknown_fields(!self.ignore_unknown)
    }
}

/// Where a binding's request body goes, resolved in the request message.
#[derive(Debug, Clone)]
enum BodyTarget {
    None,
    All,
    Field(FieldDescriptor),
}

/// A binding compiled against its request message: what builds the
/// message from a request.
#[derive(Debug, Clone)]
pub struct RequestMapping {
    input: MessageDescriptor,
    body: BodyTarget,
    /// The path variables' field paths, as written, and their fields.
    path_fields: Vec<(String, Vec<FieldDescriptor>)>,
    options: JsonOptions,
}

/// The fields a request's path and query set, ready to go into each
/// message built for the request (one, or each of a client stream).
#[derive(Debug, Clone, Default)]
pub struct Assignments(Vec<Assignment>);

#[derive(Debug, Clone)]
struct Assignment {
    /// As the client wrote it.
    name: String,
    fields: Vec<FieldDescriptor>,
    value: Value,
    /// From the path: the body may hold the same value, no other.
    from_path: bool,
}

impl RequestMapping {
    /// `binding` checked by `portico_shared::grpc::bindings`, so its fields exist.
    pub fn new(input: MessageDescriptor, binding: &Binding, options: JsonOptions) -> Result<Self, String> {
        let body = match &binding.body {
            BodySelector::None => BodyTarget::None,
            BodySelector::All => BodyTarget::All,
            BodySelector::Field(name) => {
                BodyTarget::Field(input.get_field_by_name(name).ok_or_else(|| format!("no body field '{name}' in {}", input.full_name()))?)
            }
        };
        let path_fields = binding
            .template
            .field_paths()
            .map(|path| {
                resolve(&input, path, false)
                    .map(|fields| (path.to_owned(), fields))
                    .ok_or_else(|| format!("no field '{path}' in {}", input.full_name()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { input, body, path_fields, options })
    }

    /// The fields the path variables and the query parameters set.
    pub fn assignments(&self, captures: &[Capture<'_>], query: Option<&str>) -> Result<Assignments, TranscodeError> {
        let mut assignments = Vec::with_capacity(captures.len());
        for capture in captures {
            let Some((_, fields)) = self.path_fields.iter().find(|(path, _)| path == capture.field_path) else { continue };
            let value = parse_value(fields, capture.field_path, std::slice::from_ref(&capture.value))?;
            assignments.push(Assignment { name: capture.field_path.to_owned(), fields: fields.clone(), value, from_path: true });
        }
        let mut parameters: Vec<(String, Vec<FieldDescriptor>, Vec<String>)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let Some(fields) = resolve(&self.input, &name, true) else {
                if self.options.ignore_unknown {
                    continue;
                }
                return Err(TranscodeError::UnknownQueryParameter(name.into_owned()));
            };
            self.check_unbound(&name, &fields)?;
            let leaf = fields.last().cloned();
            match parameters.iter_mut().find(|(_, known, _)| *known == fields) {
                Some((_, _, values)) if leaf.is_some_and(|leaf| leaf.is_list()) => values.push(value.into_owned()),
                Some(_) => return Err(invalid(&name, "given more than once")),
                None => parameters.push((name.into_owned(), fields, vec![value.into_owned()])),
            }
        }
        for (name, fields, values) in parameters {
            let value = parse_value(&fields, &name, &values)?;
            assignments.push(Assignment { name, fields, value, from_path: false });
        }
        Ok(Assignments(assignments))
    }

    /// A query parameter may not name what the path or the body binds.
    fn check_unbound(&self, name: &str, fields: &[FieldDescriptor]) -> Result<(), TranscodeError> {
        match &self.body {
            BodyTarget::All => return Err(invalid(name, "the body carries every field of this method; it cannot be a query parameter")),
            BodyTarget::Field(body) if fields.first() == Some(body) => return Err(invalid(name, "the body carries this field")),
            _ => {}
        }
        let overlaps = |(_, bound): &&(String, Vec<FieldDescriptor>)| {
            let shorter = bound.len().min(fields.len());
            bound[..shorter] == fields[..shorter]
        };
        if let Some((path, _)) = self.path_fields.iter().find(overlaps) {
            return Err(invalid(name, &format!("the path binds '{path}'")));
        }
        Ok(())
    }

    /// The request message from `body` (`line`: its NDJSON line, if one)
    /// and `assignments`.
    pub fn message(&self, body: &[u8], line: Option<usize>, assignments: &Assignments) -> Result<DynamicMessage, TranscodeError> {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        let mut message = match &self.body {
            _ if blank => DynamicMessage::new(self.input.clone()),
            BodyTarget::None => return Err(TranscodeError::BodyNotAllowed),
            BodyTarget::All => self.deserialize(body, line)?,
            BodyTarget::Field(field) => {
                // One JSON value, so that wrapping it cannot reach another field.
                serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|error| invalid_json(line, None, &error))?;
                let wrapped = [b"{\"", field.name().as_bytes(), b"\":", body, b"}"].concat();
                self.deserialize(&wrapped, line)?
            }
        };
        for assignment in &assignments.0 {
            assignment.apply(&mut message)?;
        }
        Ok(message)
    }

    fn deserialize(&self, json: &[u8], line: Option<usize>) -> Result<DynamicMessage, TranscodeError> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let mut track = serde_path_to_error::Track::new();
        let options = self.options.deserialize_options();
        let message = DynamicMessage::deserialize_with_options(
            self.input.clone(),
            serde_path_to_error::Deserializer::new(&mut deserializer, &mut track),
            &options,
        )
        .map_err(|error| invalid_json(line, Some(track.path().to_string()), &error))?;
        deserializer.end().map_err(|error| invalid_json(line, None, &error))?;
        Ok(message)
    }
}

impl Assignment {
    fn apply(&self, message: &mut DynamicMessage) -> Result<(), TranscodeError> {
        let Some((leaf, parents)) = self.fields.split_last() else { return Ok(()) };
        let mut target = message;
        for parent in parents {
            target = match target.get_field_mut(parent) {
                Value::Message(inner) => inner,
                _ => return Err(invalid(&self.name, "is not inside a message")),
            };
        }
        if self.from_path && target.has_field(leaf) && *target.get_field(leaf) != self.value {
            return Err(invalid(&self.name, "the body gives it a value other than the path's"));
        }
        target.set_field(leaf, self.value.clone());
        Ok(())
    }
}

/// The fields of a dotted path, each by proto name (or, `json_names`,
/// JSON name); `None` when one is missing or not a singular message
/// before the last.
fn resolve(input: &MessageDescriptor, path: &str, json_names: bool) -> Option<Vec<FieldDescriptor>> {
    let mut message = input.clone();
    let mut fields = Vec::new();
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = message.get_field_by_name(name).or_else(|| json_names.then(|| message.get_field_by_json_name(name)).flatten())?;
        if names.peek().is_some() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => message = inner,
                _ => return None,
            }
        }
        fields.push(field);
    }
    Some(fields)
}

fn invalid(field: &str, message: &str) -> TranscodeError {
    TranscodeError::InvalidField { field: field.to_owned(), message: message.to_owned() }
}

fn invalid_json(line: Option<usize>, field: Option<String>, error: &dyn std::fmt::Display) -> TranscodeError {
    TranscodeError::InvalidJson { line, field: field.filter(|field| field != "."), message: error.to_string() }
}

/// Messages a query parameter or path variable can give a value, by
/// their JSON form.
const SCALAR_LIKE_MESSAGES: [&str; 15] = [
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
];

/// The value of the last of `fields` from its text (several for a repeated field).
fn parse_value(fields: &[FieldDescriptor], name: &str, texts: &[String]) -> Result<Value, TranscodeError> {
    let Some(field) = fields.last() else { return Err(invalid(name, "names no field")) };
    if field.is_map() {
        return Err(invalid(name, "a map cannot be set from the query"));
    }
    if let Kind::Message(message) = field.kind()
        && !SCALAR_LIKE_MESSAGES.contains(&message.full_name())
    {
        return Err(invalid(name, "is a message; set its fields as 'name.field'"));
    }
    let kind = field.kind();
    let mut json =
        texts.iter().map(|text| text_json(&kind, text)).collect::<Result<Vec<_>, _>>().map_err(|message| invalid(name, &message))?;
    let json = if field.is_list() { serde_json::Value::Array(json) } else { json.pop().ok_or_else(|| invalid(name, "has no value"))? };
    // Through a one-field message, so that the JSON mapping reads it exactly as in a body.
    let wrapper = json!({ field.name(): json });
    let mut parsed =
        DynamicMessage::deserialize(field.parent_message().clone(), wrapper).map_err(|error| invalid(name, &error.to_string()))?;
    Ok(parsed.take_field(field).unwrap_or_else(|| field.default_value()))
}

/// The JSON that reads as `text` for a field of `kind`.
fn text_json(kind: &Kind, text: &str) -> Result<serde_json::Value, String> {
    let boolean = |text: &str| match text {
        "true" => Ok(serde_json::Value::Bool(true)),
        "false" => Ok(serde_json::Value::Bool(false)),
        _ => Err(format!("'{text}' is not true or false")),
    };
    match kind {
        Kind::Bool => boolean(text),
        Kind::Enum(_) => Ok(text.parse::<i32>().map_or_else(|_| json!(text), |number| json!(number))),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.BoolValue" => boolean(text),
            "google.protobuf.Struct" | "google.protobuf.ListValue" => {
                serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
            }
            "google.protobuf.Value" => Ok(serde_json::from_str(text).unwrap_or_else(|_| json!(text))),
            _ => Ok(json!(text)),
        },
        _ => Ok(json!(text)),
    }
}

/// Renders response messages of a method as JSON.
#[derive(Debug, Clone)]
pub struct ResponseMapping {
    output: MessageDescriptor,
    response_body: Option<FieldDescriptor>,
    options: SerializeOptions,
    proto_names: bool,
}

impl ResponseMapping {
    pub fn new(output: MessageDescriptor, response_body: Option<&str>, options: &JsonOptions) -> Result<Self, String> {
        let response_body = response_body
            .map(|name| output.get_field_by_name(name).ok_or_else(|| format!("no response_body field '{name}' in {}", output.full_name())))
            .transpose()?;
        Ok(Self { output, response_body, options: options.serialize_options(), proto_names: options.proto_names })
    }

    /// The JSON of an encoded response message.
    pub fn render(&self, encoded: Bytes) -> Result<Vec<u8>, TranscodeError> {
        let message = DynamicMessage::decode(self.output.clone(), encoded)
            .map_err(|error| TranscodeError::MalformedResponse(format!("not a {} message: {error}", self.output.full_name())))?;
        let unrenderable = |error: serde_json::Error| {
            TranscodeError::MalformedResponse(format!("{} cannot be rendered as JSON: {error}", self.output.full_name()))
        };
        let Some(field) = &self.response_body else {
            return to_json_bytes(&message, &self.options).map_err(unrenderable);
        };
        match (field.kind(), message.get_field(field).as_ref()) {
            (Kind::Message(_), Value::Message(inner)) => to_json_bytes(inner, &self.options).map_err(unrenderable),
            _ => {
                // A scalar, list or map: its JSON as the mapping writes it in a message.
                let mut single = DynamicMessage::new(self.output.clone());
                single.set_field(field, message.get_field(field).into_owned());
                // A default scalar is written all the same: it is the whole answer.
                let options =
                    if field.is_list() || field.is_map() { self.options.clone() } else { self.options.clone().skip_default_fields(false) };
                let rendered = single.serialize_with_options(serde_json::value::Serializer, &options).map_err(unrenderable)?;
                let key = if self.proto_names { field.name() } else { field.json_name() };
                let value = match rendered.get(key) {
                    Some(value) => value.clone(),
                    None if field.is_map() => json!({}),
                    None => json!([]),
                };
                serde_json::to_vec(&value).map_err(unrenderable)
            }
        }
    }

    pub fn serialize_options(&self) -> &SerializeOptions {
        &self.options
    }
}

fn to_json_bytes(message: &DynamicMessage, options: &SerializeOptions) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(message.encoded_len() * 2);
    message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), options)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prost_reflect::prost::Message;

    use super::super::fixtures;
    use super::*;

    fn render(options: JsonOptions, json: serde_json::Value) -> serde_json::Value {
        let output = fixtures::pool().get_message_by_name("shop.v1.Order").unwrap();
        let encoded = fixtures::message("shop.v1.Order", json).encode_to_vec();
        let rendered = ResponseMapping::new(output, None, &options).unwrap().render(Bytes::from(encoded)).unwrap();
        serde_json::from_slice(&rendered).unwrap()
    }

    fn full_order() -> serde_json::Value {
        json!({
            "name": "o1", "id": "9007199254740993", "big": "18446744073709551615", "state": "SHIPPED",
            "tags": ["x", "y"], "counts": {"a": 1}, "cash": {"currency": "EUR", "units": "-9007199254740993"},
            "address": {"city": "Lyon", "zipCode": "69001"}, "blob": "AQID/w==",
            "created": "2024-01-02T03:04:05.120Z", "ttl": "-1.500s", "mask": "address.zipCode,name", "limit": "9007199254740993",
            "flag": false, "note": "", "attrs": {"k": [1.5, "two", null, {"deep": true}]}, "extra": null, "items": [1.0, {"x": false}],
            "detail": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"},
            "price": 1.25, "gift": true, "history": ["SHIPPED", "PENDING"], "ids": ["1", "-2"], "displayName": "d", "delta": -3, "ratio": 0.5
        })
    }

    #[test]
    fn renders_every_kind_by_the_proto3_json_mapping() {
        assert_eq!(render(JsonOptions::default(), full_order()), full_order());
    }

    #[test]
    fn proto_names_and_enum_numbers_are_options() {
        let options = JsonOptions { proto_names: true, enums_as_ints: true, ..JsonOptions::default() };
        let rendered = render(options, full_order());
        assert_eq!(rendered["display_name"], "d");
        assert_eq!(rendered["address"], json!({"city": "Lyon", "zip_code": "69001"}));
        assert_eq!(rendered["state"], 2);
        assert_eq!(rendered["history"], json!([2, 1]));
        assert_eq!(rendered["id"], "9007199254740993", "64-bit integers stay strings");
        assert!(rendered.get("displayName").is_none());
    }

    #[test]
    fn default_values_are_written_only_when_asked() {
        assert_eq!(render(JsonOptions::default(), json!({"name": "o"})), json!({"name": "o"}));
        let rendered = render(JsonOptions { emit_defaults: true, ..JsonOptions::default() }, json!({"name": "o"}));
        assert_eq!(
            rendered,
            json!({
                "name": "o", "id": "0", "big": "0", "state": "STATE_UNSPECIFIED", "tags": [], "counts": {}, "blob": "",
                "price": 0.0, "gift": false, "history": [], "ids": [], "displayName": "", "delta": 0, "ratio": 0.0
            }),
            "scalars, lists and maps, not unset messages or oneofs"
        );
    }

    #[test]
    fn an_any_of_an_unknown_type_cannot_be_rendered() {
        let output = fixtures::pool().get_message_by_name("shop.v1.Order").unwrap();
        let mut order = DynamicMessage::new(output.clone());
        let any = fixtures::pool().get_message_by_name("google.protobuf.Any").unwrap();
        let mut detail = DynamicMessage::new(any);
        detail.set_field_by_name("type_url", Value::String("type.googleapis.com/acme.Unknown".into()));
        order.set_field_by_name("detail", Value::Message(detail));
        let error =
            ResponseMapping::new(output, None, &JsonOptions::default()).unwrap().render(Bytes::from(order.encode_to_vec())).unwrap_err();
        assert!(matches!(error, TranscodeError::MalformedResponse(_)), "{error}");
    }

    #[test]
    fn wrappers_and_well_known_types_in_the_query() {
        let input = fixtures::pool().get_message_by_name("shop.v1.Order").unwrap();
        let binding = portico_shared::grpc::bindings::Binding {
            method: portico_shared::grpc::bindings::MethodMatch::Any,
            template: portico_shared::grpc::http_rule::PathTemplate::parse("/x").unwrap(),
            body: BodySelector::None,
            response_body: None,
        };
        let mapping = RequestMapping::new(input, &binding, JsonOptions::default()).unwrap();
        let query = "limit=9007199254740993&flag=true&note=hi&extra=plain&items=%5B1%2C%22a%22%5D&mask=a.b&ttl=0.25s&blob=_-8&ratio=NaN&cash.units=5";
        let assignments = mapping.assignments(&[], Some(query)).unwrap();
        let message = mapping.message(b"", None, &assignments).unwrap();
        let rendered = message.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new()).unwrap();
        assert_eq!(
            rendered,
            json!({
                "limit": "9007199254740993", "flag": true, "note": "hi", "extra": "plain", "items": [1.0, "a"],
                "mask": "a.b", "ttl": "0.250s", "blob": "/+8=", "ratio": "NaN", "cash": {"units": "5"}
            })
        );
    }
}
