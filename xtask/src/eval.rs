//! `cargo xtask eval`: evaluates a JSON list of cases on one engine and writes the results
//! as JSON, so that this library can be compared with another framework on the same inputs.
//! The format is documented in the README; `golden/eval-example.json` is an example.
//!
//! Every case stands alone: one that does not parse, or that the library rejects, becomes
//! an `{"name", "error"}` entry and the others still run.

use serde_json::{json, Map, Value};
use svsoftmax_core::reference::Reference;
use svsoftmax_core::{
    BeyondPi, CosineMatrix, Engine, Indicator, Margin, Reduction, SvSoftmax, Targets, Upstream,
};
use svsoftmax_dfdx::{DfdxEngine, Implementation};
use svsoftmax_ndarray::NdarrayEngine;

/// The engines `--engine` accepts. `dfdx-cpu-*` runs dfdx's default implementation on
/// `Cpu` (the fused one); the others name theirs.
pub const ENGINES: [&str; 10] = [
    "reference",
    "ndarray-f32",
    "ndarray-f64",
    "dfdx-cpu-f32",
    "dfdx-cpu-f64",
    "dfdx-composed-f32",
    "dfdx-composed-f64",
    "dfdx-fused-f32",
    "dfdx-fused-f64",
    "dfdx-cuda-f32",
];

/// The engine called `name`.
pub fn engine(name: &str) -> Result<Box<dyn Engine>, String> {
    match name {
        "reference" => Ok(Box::new(Reference)),
        "ndarray-f32" => Ok(Box::new(NdarrayEngine::<f32>::new())),
        "ndarray-f64" => Ok(Box::new(NdarrayEngine::<f64>::new())),
        "dfdx-cpu-f32" => Ok(Box::new(DfdxEngine::<f32>::new(Implementation::Auto))),
        "dfdx-cpu-f64" => Ok(Box::new(DfdxEngine::<f64>::new(Implementation::Auto))),
        "dfdx-composed-f32" => Ok(Box::new(DfdxEngine::<f32>::new(Implementation::Composed))),
        "dfdx-composed-f64" => Ok(Box::new(DfdxEngine::<f64>::new(Implementation::Composed))),
        "dfdx-fused-f32" => Ok(Box::new(DfdxEngine::<f32>::new(Implementation::Fused))),
        "dfdx-fused-f64" => Ok(Box::new(DfdxEngine::<f64>::new(Implementation::Fused))),
        "dfdx-cuda-f32" => Err(format!(
            "engine `{name}` is not part of this build: the xtask runs on Cpu only; the Cuda \
             path is exercised by `cargo test -p svsoftmax-dfdx --features cuda --test cuda` \
             on a machine with a GPU"
        )),
        _ => Err(format!(
            "unknown engine `{name}`: expected one of {}",
            ENGINES.join(", ")
        )),
    }
}

/// Evaluates every case of `cases`, which must be a JSON array.
pub fn evaluate_all(engine: &dyn Engine, cases: &Value) -> Result<Value, String> {
    let cases = cases
        .as_array()
        .ok_or("the cases file must hold a JSON array of cases")?;
    Ok(Value::Array(
        cases.iter().map(|case| evaluate(engine, case)).collect(),
    ))
}

fn evaluate(engine: &dyn Engine, case: &Value) -> Value {
    let name = case
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let outcome = parse(case).and_then(|case| run(engine, &case).map_err(|e| e.to_string()));
    match outcome {
        Ok(mut result) => {
            result.insert("name".to_owned(), Value::String(name));
            Value::Object(result)
        }
        Err(error) => json!({ "name": name, "error": error }),
    }
}

struct Case {
    config: SvSoftmax,
    cosines: Vec<f64>,
    n_rows: usize,
    n_classes: usize,
    targets: Targets,
}

fn run(engine: &dyn Engine, case: &Case) -> Result<Map<String, Value>, svsoftmax_core::Error> {
    let cosines = CosineMatrix::new(&case.cosines, case.n_rows, case.n_classes)?;
    let evaluation =
        engine.forward_backward(&case.config, cosines, &case.targets, Upstream::Scalar(1.0))?;
    let forward = evaluation.forward;
    let grad: Vec<Value> = evaluation
        .grad_cosines
        .chunks(case.n_classes.max(1))
        .map(|row| Value::Array(row.iter().copied().map(encode).collect()))
        .collect();
    let support_vectors: Vec<Value> = forward
        .diagnostics
        .iter()
        .map(|row| row.map_or(Value::Null, |row| json!(row.support_vectors)))
        .collect();
    let mut result = Map::new();
    result.insert("loss".to_owned(), encode(forward.loss));
    result.insert(
        "row_losses".to_owned(),
        Value::Array(forward.row_losses.iter().copied().map(encode).collect()),
    );
    result.insert("grad_cosines".to_owned(), Value::Array(grad));
    result.insert("support_vectors".to_owned(), Value::Array(support_vectors));
    Ok(result)
}

/// Non-finite numbers are the strings "inf", "-inf" and "nan", which JSON cannot hold.
fn encode(value: f64) -> Value {
    match value {
        _ if value.is_nan() => json!("nan"),
        f64::INFINITY => json!("inf"),
        f64::NEG_INFINITY => json!("-inf"),
        _ => json!(value),
    }
}

fn number(value: &Value, what: &str) -> Result<f64, String> {
    match value {
        // Numbers keep their text (serde_json's `arbitrary_precision`), so a literal beyond
        // f64's range is this field's error rather than the whole file's.
        Value::Number(number) => match number.as_f64() {
            Some(parsed) if parsed.is_finite() => Ok(parsed),
            _ => Err(format!(
                "{what}: {number} is outside the range of f64; write \"inf\" or \"-inf\" for \
                 an infinity"
            )),
        },
        Value::String(text) => match text.as_str() {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            _ => Err(format!(
                "{what}: expected a number, \"inf\", \"-inf\" or \"nan\", got {value}"
            )),
        },
        _ => Err(format!("{what}: expected a number, got {value}")),
    }
}

fn parse(case: &Value) -> Result<Case, String> {
    let fields = case
        .as_object()
        .ok_or_else(|| format!("a case must be an object, got {case}"))?;
    for key in fields.keys() {
        let known = [
            "name",
            "margin",
            "indicator",
            "scale",
            "t",
            "reduction",
            "cosines",
            "targets",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "unknown field `{key}`: expected one of {}",
                known.join(", ")
            ));
        }
    }
    match fields.get("name") {
        Some(Value::String(_)) => {}
        Some(other) => return Err(format!("field `name`: expected a string, got {other}")),
        None => return Err("missing field `name`".to_owned()),
    }

    let mut builder = SvSoftmax::builder();
    if let Some(margin) = fields.get("margin") {
        builder = builder.margin(parse_margin(margin)?);
    }
    if let Some(indicator) = fields.get("indicator") {
        builder = builder.indicator(match indicator.as_str() {
            Some("adaptive") => Indicator::Adaptive,
            Some("fixed") => Indicator::Fixed,
            _ => {
                return Err(format!(
                    "field `indicator`: expected \"adaptive\" or \"fixed\", got {indicator}"
                ))
            }
        });
    }
    if let Some(reduction) = fields.get("reduction") {
        builder = builder.reduction(match reduction.as_str() {
            Some("mean") => Reduction::Mean,
            Some("sum") => Reduction::Sum,
            Some("none") => Reduction::None,
            _ => {
                return Err(format!(
                    "field `reduction`: expected \"mean\", \"sum\" or \"none\", got {reduction}"
                ))
            }
        });
    }
    if let Some(scale) = fields.get("scale") {
        builder = builder.scale(number(scale, "field `scale`")?);
    }
    if let Some(t) = fields.get("t") {
        builder = builder.t(number(t, "field `t`")?);
    }
    let config = builder.build().map_err(|error| error.to_string())?;

    let (cosines, n_rows, n_classes) = parse_cosines(fields.get("cosines"))?;
    let targets = parse_targets(fields.get("targets"))?;
    Ok(Case {
        config,
        cosines,
        n_rows,
        n_classes,
        targets,
    })
}

fn parse_margin(margin: &Value) -> Result<Margin, String> {
    let fields = margin
        .as_object()
        .ok_or_else(|| format!("field `margin`: expected an object, got {margin}"))?;
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("");
    let known: &[&str] = match kind {
        "none" => &["kind"],
        "additive" => &["kind", "m"],
        "angular" => &["kind", "m", "beyond_pi"],
        "multiplicative" => &["kind", "m", "lambda"],
        "combined" => &["kind", "m1", "m2", "m3", "beyond_pi"],
        _ => &["kind", "m", "lambda", "m1", "m2", "m3", "beyond_pi"],
    };
    if let Some(key) = fields.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(format!(
            "margin: unknown field `{key}` for kind {kind:?}: expected one of {}",
            known.join(", ")
        ));
    }
    let field = |key: &str| -> Result<f64, String> {
        let value = fields
            .get(key)
            .ok_or_else(|| format!("margin: missing field `{key}`"))?;
        number(value, &format!("margin field `{key}`"))
    };
    let beyond_pi = || -> Result<BeyondPi, String> {
        match fields.get("beyond_pi").map(|value| (value, value.as_str())) {
            None | Some((Value::Null, _)) => Ok(BeyondPi::default()),
            Some((_, Some("clip"))) => Ok(BeyondPi::Clip),
            Some((_, Some("fallback"))) => Ok(BeyondPi::Fallback),
            Some((_, Some("easy"))) => Ok(BeyondPi::Easy),
            Some((value, _)) => Err(format!(
                "margin field `beyond_pi`: expected \"clip\", \"fallback\" or \"easy\", got {value}"
            )),
        }
    };
    match fields.get("kind").and_then(Value::as_str) {
        Some("none") => Ok(Margin::None),
        Some("additive") => Ok(Margin::Additive { m: field("m")? }),
        Some("angular") => Ok(Margin::Angular {
            m: field("m")?,
            beyond_pi: beyond_pi()?,
        }),
        Some("multiplicative") => {
            let m = fields
                .get("m")
                .and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok());
            let m = m.ok_or_else(|| {
                format!(
                    "margin field `m`: expected an integer >= 1, got {}",
                    fields.get("m").unwrap_or(&Value::Null)
                )
            })?;
            let lambda = match fields.get("lambda") {
                Some(value) => number(value, "margin field `lambda`")?,
                None => 0.0,
            };
            Ok(Margin::Multiplicative { m, lambda })
        }
        Some("combined") => Ok(Margin::Combined {
            m1: field("m1")?,
            m2: field("m2")?,
            m3: field("m3")?,
            beyond_pi: beyond_pi()?,
        }),
        _ => Err(format!(
            "margin field `kind`: expected \"none\", \"additive\", \"angular\", \"multiplicative\" \
             or \"combined\", got {}",
            fields.get("kind").unwrap_or(&Value::Null)
        )),
    }
}

fn parse_cosines(cosines: Option<&Value>) -> Result<(Vec<f64>, usize, usize), String> {
    let rows = cosines.ok_or("missing field `cosines`")?;
    let rows = rows
        .as_array()
        .ok_or_else(|| format!("field `cosines`: expected an array of rows, got {rows}"))?;
    let mut data = Vec::new();
    let mut n_classes = None;
    for (i, row) in rows.iter().enumerate() {
        let row = row
            .as_array()
            .ok_or_else(|| format!("cosines row {i}: expected an array, got {row}"))?;
        match n_classes {
            Some(n) if n != row.len() => {
                return Err(format!(
                    "cosines row {i}: expected {n} values like row 0, got {}",
                    row.len()
                ))
            }
            _ => n_classes = Some(row.len()),
        }
        for (k, value) in row.iter().enumerate() {
            data.push(number(value, &format!("cosines[{i}][{k}]"))?);
        }
    }
    Ok((data, rows.len(), n_classes.unwrap_or(0)))
}

fn parse_targets(targets: Option<&Value>) -> Result<Targets, String> {
    let values = targets.ok_or("missing field `targets`")?;
    let values = values
        .as_array()
        .ok_or_else(|| format!("field `targets`: expected an array, got {values}"))?;
    let classes = values
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Value::Null => Ok(None),
            _ => value
                .as_u64()
                .and_then(|class| usize::try_from(class).ok())
                .map(Some)
                .ok_or_else(|| {
                    format!("targets[{i}]: expected a class index >= 0 or null, got {value}")
                }),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Targets::with_ignored(classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Value {
        serde_json::from_str(include_str!("../../golden/eval-example.json")).unwrap()
    }

    fn by_name<'a>(results: &'a Value, name: &str) -> &'a Value {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
    }

    #[test]
    fn the_example_file_evaluates_on_every_engine() {
        let reference = evaluate_all(&Reference, &example()).unwrap();
        // 24.64: the hand derivation of the README's SV-AM row (z = [4.8, 29.44, -6.4]).
        let loss = by_name(&reference, "am-basic")["loss"].as_f64().unwrap();
        assert!((loss - 24.64).abs() < 1e-6, "{loss}");
        assert_eq!(
            by_name(&reference, "am-basic")["support_vectors"],
            json!([1])
        );
        for name in ENGINES
            .iter()
            .filter(|name| **name != "reference" && !name.contains("cuda"))
        {
            let results = evaluate_all(engine(name).unwrap().as_ref(), &example()).unwrap();
            let other = by_name(&results, "am-basic")["loss"].as_f64().unwrap();
            assert!(
                (other - loss).abs() < 1e-4 * loss,
                "{name}: {other} vs {loss}"
            );
            for (a, b) in results
                .as_array()
                .unwrap()
                .iter()
                .zip(reference.as_array().unwrap())
            {
                assert_eq!(
                    a.get("error").is_some(),
                    b.get("error").is_some(),
                    "{name}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn bad_cases_spoil_only_themselves() {
        let results = evaluate_all(&Reference, &example()).unwrap();
        let error = |name: &str| {
            by_name(&results, name)["error"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(error("nan-cosine").contains("non-finite cosine"));
        assert!(error("ragged").contains("cosines row 1"));
        assert!(error("wrong-type").contains("field `scale`"));
        assert!(error("missing-targets").contains("missing field `targets`"));
        assert!(error("bad-t").contains("invalid t"));
        assert_eq!(
            by_name(&results, "ignored-row")["support_vectors"][1],
            Value::Null
        );
    }

    #[test]
    fn misspelled_fields_and_huge_numbers_are_errors_of_their_case() {
        let cases: Value = serde_json::from_str(
            r#"[
              {"name": "typo", "margin": {"kind": "angular", "m": 0.5, "beyondpi": "clip"},
               "cosines": [[-0.99, 0.2]], "targets": [0]},
              {"name": "huge", "cosines": [[0.1, 1e400]], "targets": [0]},
              {"name": "null-beyond", "margin": {"kind": "angular", "m": 0.5, "beyond_pi": null},
               "cosines": [[0.3, 0.2]], "targets": [0]},
              {"name": "big-target", "cosines": [[0.1, 0.2]], "targets": [18446744073709551615]}
            ]"#,
        )
        .unwrap();
        let results = evaluate_all(&Reference, &cases).unwrap();
        let error = |name: &str| {
            by_name(&results, name)["error"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            error("typo").contains("unknown field `beyondpi`"),
            "{}",
            error("typo")
        );
        assert!(
            error("huge").contains("outside the range of f64"),
            "{}",
            error("huge")
        );
        assert!(by_name(&results, "null-beyond").get("loss").is_some());
        assert!(
            error("big-target").contains("18446744073709551615"),
            "{}",
            error("big-target")
        );
    }

    #[test]
    fn unknown_and_absent_engines_are_errors() {
        let message = |name| engine(name).err().expect("no such engine");
        assert!(message("dfdx-cuda-f32").contains("not part of this build"));
        assert!(message("torch").contains("unknown engine"));
    }
}
