//! Reconstruction parameters: defaults, per-device metadata overlay, validation.

use std::error::Error;
use std::fmt;

use serde_json::{Map, Value};

/// Margin on `max_power_kw` before a rise counts as implausible: meters briefly exceed
/// their nameplate power and reading timestamps are not exact.
pub const HEADROOM: f64 = 1.1;

/// Parameters of the register reconstruction for one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Maximum power of the device (kW). `None` = unknown: rises are not checked, and resets
    /// are recognised by [`Params::reset_fraction`] instead of by the energy a gap allows.
    pub max_power_kw: Option<f64>,
    /// The largest value the register shows (kWh), e.g. 99,999.9; it shows 0 after it (see
    /// [`Params::register_wrap_kwh`]). `None` = unknown.
    pub register_max_kwh: Option<f64>,
    /// Absolute jitter tolerance (kWh); default 0.5.
    pub jitter_kwh: f64,
    /// Jitter tolerance relative to the register value; default 1e-4.
    pub jitter_rel: f64,
    /// Without `max_power_kw`, a drop to at most this fraction of the previous value (or a
    /// rollover of at most this fraction of the modulus) counts as a reset (rollover);
    /// default 0.1.
    pub reset_fraction: f64,
}

impl Params {
    /// The documented defaults; a `const` so that settings can take their defaults from it.
    pub const DEFAULT: Params = Params {
        max_power_kw: None,
        register_max_kwh: None,
        jitter_kwh: 0.5,
        jitter_rel: 1e-4,
        reset_fraction: 0.1,
    };
}

impl Params {
    /// Where the register wraps: its largest value plus one step of its last digit, read from
    /// how the largest value is written (99,999.9 wraps at 100,000; 999,999 at 1,000,000), so
    /// that a wrap books the step from the largest value to 0 as well.
    pub fn register_wrap_kwh(&self) -> Option<f64> {
        self.register_max_kwh.map(|max| {
            let written = format!("{max}");
            let decimals = written
                .split_once('.')
                .filter(|_| !written.contains(['e', 'E']))
                .map_or(0, |(_, fraction)| fraction.len().min(6));
            max + 10f64.powi(-(decimals as i32))
        })
    }
}

impl Default for Params {
    fn default() -> Self {
        Params::DEFAULT
    }
}

/// An invalid parameter: which one, what it must be, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    key: String,
    requirement: &'static str,
    got: String,
}

impl ParamError {
    /// The offending parameter, e.g. `metadata.max_power_kw` or `jitter_kwh`.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} must be {}, got {}",
            self.key, self.requirement, self.got
        )
    }
}

impl Error for ParamError {}

/// What a parameter value must be; every rule also requires a finite number.
struct Rule {
    requirement: &'static str,
    accepts: fn(f64) -> bool,
}

const POWER: Rule = Rule {
    requirement: "a positive number of kW",
    accepts: |x| x > 0.0,
};
const REGISTER_MAX: Rule = Rule {
    requirement: "a positive number of kWh",
    accepts: |x| x > 0.0,
};
const JITTER: Rule = Rule {
    requirement: "a non-negative number of kWh",
    accepts: |x| x >= 0.0,
};
const JITTER_REL: Rule = Rule {
    requirement: "a non-negative fraction of the register value",
    accepts: |x| x >= 0.0,
};
const FRACTION: Rule = Rule {
    requirement: "a fraction between 0 and 1",
    accepts: |x| (0.0..=1.0).contains(&x),
};

impl Rule {
    fn check(&self, value: f64) -> bool {
        value.is_finite() && (self.accepts)(value)
    }
}

impl Params {
    /// Overlays a device's registry metadata on these parameters.
    ///
    /// `None` and JSON `null` leave them unchanged. Keys read from the object:
    /// `max_power_kw` (alias `max_power`; `max_power_kw` wins when both are present),
    /// `energy_register_max_kwh` and `energy_jitter_kwh`. Values may be JSON numbers or
    /// strings holding a finite number; a `null` value counts as absent. Other keys are
    /// ignored.
    pub fn with_metadata(&self, metadata: Option<&Value>) -> Result<Params, ParamError> {
        let mut params = *self;
        let object = match metadata {
            None | Some(Value::Null) => return Ok(params),
            Some(Value::Object(object)) => object,
            Some(other) => {
                return Err(ParamError {
                    key: "metadata".to_owned(),
                    requirement: "a JSON object or null",
                    got: excerpt(other),
                })
            }
        };
        let power_key = if present(object, "max_power_kw").is_some() {
            "max_power_kw"
        } else {
            "max_power"
        };
        if let Some(kw) = number(object, power_key, &POWER)? {
            params.max_power_kw = Some(kw);
        }
        if let Some(kwh) = number(object, "energy_register_max_kwh", &REGISTER_MAX)? {
            params.register_max_kwh = Some(kwh);
        }
        if let Some(kwh) = number(object, "energy_jitter_kwh", &JITTER)? {
            params.jitter_kwh = kwh;
        }
        Ok(params)
    }

    /// [`Params::with_metadata`] of metadata as JSON text (how PostgreSQL hands over `jsonb`).
    /// JSON this crate cannot read is an error naming why: nesting deeper than 128 levels, or
    /// a number beyond the range of `f64` (`1e400`), anywhere in the document.
    pub fn with_metadata_text(&self, metadata: Option<&str>) -> Result<Params, ParamError> {
        let Some(text) = metadata else {
            return Ok(*self);
        };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let why = e.to_string();
            let (requirement, got) = if why.starts_with("recursion limit exceeded") {
                ("JSON nested at most 128 levels deep", "deeper nesting")
            } else if why.starts_with("number out of range") {
                (
                    "JSON whose numbers lie within ±1.7e308",
                    "a number beyond that (e.g. 1e400)",
                )
            } else {
                ("JSON", "text that does not parse")
            };
            ParamError {
                key: "metadata".to_owned(),
                requirement,
                got: got.to_owned(),
            }
        })?;
        self.with_metadata(Some(&value))
    }

    /// Checks every parameter (the defaults come from configuration, so they can be wrong too).
    pub fn validate(&self) -> Result<(), ParamError> {
        let checks = [
            ("max_power_kw", self.max_power_kw, &POWER),
            ("register_max_kwh", self.register_max_kwh, &REGISTER_MAX),
            ("jitter_kwh", Some(self.jitter_kwh), &JITTER),
            ("jitter_rel", Some(self.jitter_rel), &JITTER_REL),
            ("reset_fraction", Some(self.reset_fraction), &FRACTION),
        ];
        for (key, value, rule) in checks {
            if let Some(value) = value.filter(|&v| !rule.check(v)) {
                return Err(ParamError {
                    key: key.to_owned(),
                    requirement: rule.requirement,
                    got: value.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// Reads `key` as a number obeying `rule`; `Ok(None)` if absent or null.
fn number(object: &Map<String, Value>, key: &str, rule: &Rule) -> Result<Option<f64>, ParamError> {
    let Some(value) = present(object, key) else {
        return Ok(None);
    };
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(x) if rule.check(x) => Ok(Some(x)),
        _ => Err(ParamError {
            key: format!("metadata.{key}"),
            requirement: rule.requirement,
            got: excerpt(value),
        }),
    }
}

/// The value as JSON, shortened so that a huge document does not flood the error message.
fn excerpt(value: &Value) -> String {
    const LIMIT: usize = 80;
    let json = value.to_string();
    match json.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &json[..cut]),
        None => json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn overlay(metadata: Value) -> Result<Params, String> {
        Params::default()
            .with_metadata(Some(&metadata))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let p = Params::default();
        assert_eq!(p.max_power_kw, None);
        assert_eq!(p.register_max_kwh, None);
        assert_eq!(p.jitter_kwh, 0.5);
        assert_eq!(p.jitter_rel, 1e-4);
        assert_eq!(p.reset_fraction, 0.1);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn absent_or_null_metadata_keeps_defaults() {
        let p = Params::default();
        assert_eq!(p.with_metadata(None), Ok(p));
        assert_eq!(p.with_metadata(Some(&Value::Null)), Ok(p));
        assert_eq!(overlay(json!({})), Ok(p));
        assert_eq!(
            overlay(json!({"max_power_kw": null, "energy_jitter_kwh": null, "site": "x"})),
            Ok(p)
        );
    }

    #[test]
    fn reads_numbers_and_numeric_strings() {
        let p = overlay(json!({
            "max_power_kw": 250,
            "energy_register_max_kwh": "100000",
            "energy_jitter_kwh": " 0.25 ",
        }))
        .unwrap();
        assert_eq!(p.max_power_kw, Some(250.0));
        assert_eq!(p.register_max_kwh, Some(100_000.0));
        assert_eq!(p.jitter_kwh, 0.25);
        assert_eq!(p.jitter_rel, 1e-4);
        assert_eq!(
            overlay(json!({"energy_jitter_kwh": 0})).unwrap().jitter_kwh,
            0.0
        );
        assert_eq!(
            overlay(json!({"max_power": "1e3"})).unwrap().max_power_kw,
            Some(1000.0)
        );
    }

    #[test]
    fn max_power_kw_wins_over_alias() {
        let p = overlay(json!({"max_power": 10, "max_power_kw": 20})).unwrap();
        assert_eq!(p.max_power_kw, Some(20.0));
        // A null max_power_kw is absent, so the alias applies.
        let p = overlay(json!({"max_power": 10, "max_power_kw": null})).unwrap();
        assert_eq!(p.max_power_kw, Some(10.0));
        // The alias is not even looked at when max_power_kw is present.
        let p = overlay(json!({"max_power": "junk", "max_power_kw": 20})).unwrap();
        assert_eq!(p.max_power_kw, Some(20.0));
    }

    #[test]
    fn rejects_invalid_values_naming_key_and_value() {
        assert_eq!(
            overlay(json!({"max_power_kw": "abc"})),
            Err(r#"metadata.max_power_kw must be a positive number of kW, got "abc""#.into())
        );
        assert_eq!(
            overlay(json!({"max_power": 0})),
            Err("metadata.max_power must be a positive number of kW, got 0".into())
        );
        assert_eq!(
            overlay(json!({"energy_register_max_kwh": -5.5})),
            Err(
                "metadata.energy_register_max_kwh must be a positive number of kWh, got -5.5"
                    .into()
            )
        );
        assert_eq!(
            overlay(json!({"energy_jitter_kwh": -0.1})),
            Err("metadata.energy_jitter_kwh must be a non-negative number of kWh, got -0.1".into())
        );
        assert_eq!(
            overlay(json!({"energy_jitter_kwh": "NaN"})),
            Err(
                r#"metadata.energy_jitter_kwh must be a non-negative number of kWh, got "NaN""#
                    .into()
            )
        );
        assert_eq!(
            overlay(json!({"max_power_kw": "inf"})),
            Err(r#"metadata.max_power_kw must be a positive number of kW, got "inf""#.into())
        );
        assert_eq!(
            overlay(json!({"max_power_kw": [5]})),
            Err("metadata.max_power_kw must be a positive number of kW, got [5]".into())
        );
        assert_eq!(
            overlay(json!({"max_power_kw": true})),
            Err("metadata.max_power_kw must be a positive number of kW, got true".into())
        );
    }

    #[test]
    fn rejects_non_object_metadata() {
        assert_eq!(
            overlay(json!([1, 2])),
            Err("metadata must be a JSON object or null, got [1,2]".into())
        );
        let err = overlay(json!("x".repeat(200))).unwrap_err();
        assert!(err.starts_with(r#"metadata must be a JSON object or null, got "xxx"#));
        assert!(err.ends_with('…') && err.chars().count() < 150, "{err}");
        let err = Params::default()
            .with_metadata(Some(&json!(3)))
            .unwrap_err();
        assert_eq!(err.key(), "metadata");
    }

    #[test]
    fn the_register_wraps_one_step_after_its_largest_value() {
        let wrap = |max: f64| {
            Params {
                register_max_kwh: Some(max),
                ..Params::default()
            }
            .register_wrap_kwh()
            .unwrap()
        };
        assert!((wrap(99_999.9) - 100_000.0).abs() < 1e-9);
        assert_eq!(wrap(999_999.0), 1_000_000.0);
        assert!((wrap(9_999.99) - 10_000.0).abs() < 1e-9);
        assert_eq!(Params::default().register_wrap_kwh(), None);
    }

    #[test]
    fn metadata_text_that_cannot_be_read_is_a_clear_error() {
        let read = |text: &str| {
            Params::default()
                .with_metadata_text(Some(text))
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            read(r#"{"max_power_kw": 250}"#).unwrap().max_power_kw,
            Some(250.0)
        );
        assert_eq!(
            Params::default().with_metadata_text(None),
            Ok(Params::default())
        );
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(
            read(&deep),
            Err("metadata must be JSON nested at most 128 levels deep, got deeper nesting".into())
        );
        assert_eq!(
            read(r#"{"site": "x", "note": 1e400}"#),
            Err("metadata must be JSON whose numbers lie within ±1.7e308, got a number beyond that (e.g. 1e400)".into())
        );
        assert_eq!(
            read(r#"{"max_power_kw": 1e308}"#).unwrap().max_power_kw,
            Some(1e308)
        );
        assert!(read("{").is_err());
    }

    #[test]
    fn validate_rejects_bad_defaults() {
        let bad = |p: Params| p.validate().map_err(|e| e.to_string());
        let d = Params::default();
        assert_eq!(
            bad(Params {
                jitter_kwh: -1.0,
                ..d
            }),
            Err("jitter_kwh must be a non-negative number of kWh, got -1".into())
        );
        assert_eq!(
            bad(Params {
                jitter_rel: f64::NAN,
                ..d
            }),
            Err("jitter_rel must be a non-negative fraction of the register value, got NaN".into())
        );
        assert_eq!(
            bad(Params {
                reset_fraction: 1.5,
                ..d
            }),
            Err("reset_fraction must be a fraction between 0 and 1, got 1.5".into())
        );
        assert_eq!(
            bad(Params {
                max_power_kw: Some(0.0),
                ..d
            }),
            Err("max_power_kw must be a positive number of kW, got 0".into())
        );
        assert_eq!(
            bad(Params {
                register_max_kwh: Some(f64::INFINITY),
                ..d
            }),
            Err("register_max_kwh must be a positive number of kWh, got inf".into())
        );
        assert_eq!(
            bad(Params {
                max_power_kw: Some(5.0),
                register_max_kwh: Some(1e6),
                jitter_kwh: 0.0,
                jitter_rel: 0.0,
                reset_fraction: 1.0
            }),
            Ok(())
        );
    }
}
