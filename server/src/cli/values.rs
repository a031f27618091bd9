//! Value parsers for the enum flags whose types live in `schema` and `trainer` (which do not
//! depend on clap): each lists its possible values in `--help` and in shell completions, and
//! parses with the type's own `FromStr`, so an unknown value gets the type's message (which
//! names the expected values) and its other checks (a device not compiled into this build)
//! keep theirs.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use schema::api::{RunState, Scope};
use schema::{Algorithm, CommentaryKind};

/// Parses with `T::from_str`; offers `values` (names with their help) to help and completions.
#[derive(Debug)]
struct OneOf<T> {
    values: Vec<PossibleValue>,
    parsed: PhantomData<fn() -> T>,
}

impl<T> Clone for OneOf<T> {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            parsed: PhantomData,
        }
    }
}

impl<T> TypedValueParser for OneOf<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg.map_or_else(|| "...".to_string(), ToString::to_string);
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::InvalidUtf8,
                format!("the value of '{flag}' is not UTF-8\n"),
            )
            .with_cmd(cmd)
        })?;
        text.parse::<T>().map_err(|message| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value '{text}' for '{flag}': {message}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.values.iter().cloned()))
    }
}

/// A parser accepting `values` and parsing them with `T::from_str`.
fn one_of<T>(values: impl IntoIterator<Item = PossibleValue>) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    OneOf {
        values: values.into_iter().collect(),
        parsed: PhantomData,
    }
}

/// `--kind`.
pub(super) fn kind() -> impl TypedValueParser<Value = CommentaryKind> {
    one_of(CommentaryKind::ALL.map(|kind| {
        PossibleValue::new(kind.as_str()).help(match kind {
            CommentaryKind::ExampleWeighting => "per-example weights (a curriculum)",
            CommentaryKind::LabelBlending => "label-dependent blending of example pairs",
            CommentaryKind::AttentionMask => "a mask network the student trains through",
        })
    }))
}

/// `--algorithm`.
pub(super) fn algorithm() -> impl TypedValueParser<Value = Algorithm> {
    one_of(Algorithm::ALL.map(|algorithm| {
        PossibleValue::new(algorithm.as_str()).help(match algorithm {
            Algorithm::Bptt => "backpropagation through training, a fresh student per meta-step",
            Algorithm::Ift => "implicit differentiation (Neumann series), one student",
            Algorithm::TruncatedBptt => "one student; phi updated through every --unroll-steps",
        })
    }))
}

/// `--inner-optimizer`.
pub(super) fn optimizer() -> impl TypedValueParser<Value = schema::Optimizer> {
    one_of([PossibleValue::new("sgd"), PossibleValue::new("adam")])
}

/// `--device`: every device, so one not compiled in is refused with how to build it.
pub(super) fn device() -> impl TypedValueParser<Value = trainer::device::ComputeDevice> {
    one_of(["cpu", "wgpu", "cuda"].map(PossibleValue::new))
}

/// `--mask-range` (`unit`, the range of artifacts written before ranges existed, is accepted
/// but not listed).
pub(super) fn mask_range() -> impl TypedValueParser<Value = schema::arch::MaskRange> {
    one_of([
        PossibleValue::new("half").help("1 +- 0.5 around 1 (the paper's range)"),
        PossibleValue::new("full").help("down to 0: can remove a shortcut"),
        PossibleValue::new("unit").hide(true),
    ])
}

/// `--noise` of `dataset corrupt`.
pub(super) fn noise() -> impl TypedValueParser<Value = schema::corruption::NoiseKind> {
    one_of([
        PossibleValue::new("symmetric").help("a random other class"),
        PossibleValue::new("pair").help("the next class, c -> c+1 (the confusable kind)"),
    ])
}

/// `--scope` of tokens.
pub(super) fn scope() -> impl TypedValueParser<Value = Scope> {
    one_of([Scope::Read, Scope::Write, Scope::Admin].map(|s| PossibleValue::new(s.as_str())))
}

/// `--state` of runs.
pub(super) fn run_state() -> impl TypedValueParser<Value = RunState> {
    one_of(RunState::ALL.map(|s| PossibleValue::new(s.as_str())))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[arg(long, value_parser = kind())]
        kind: Option<CommentaryKind>,
        #[arg(long, value_parser = mask_range())]
        mask_range: Option<schema::arch::MaskRange>,
        #[arg(long, value_parser = device())]
        device: Option<trainer::device::ComputeDevice>,
    }

    #[test]
    fn known_values_parse_to_the_type_and_unknown_ones_name_the_possible_values() {
        let flags =
            Flags::try_parse_from(["x", "--kind", "label-blending", "--mask-range", "unit"])
                .expect("parse");
        assert_eq!(flags.kind, Some(CommentaryKind::LabelBlending));
        assert_eq!(flags.mask_range, Some(schema::arch::MaskRange::Unit));
        let err = Flags::try_parse_from(["x", "--kind", "weighting"])
            .expect_err("an unknown kind")
            .to_string();
        assert!(
            err.contains("invalid value 'weighting' for '--kind <KIND>'")
                && err.contains("unknown commentary kind \"weighting\"")
                && err.contains("example-weighting")
                && err.contains("attention-mask"),
            "{err}"
        );
        let listed: Vec<String> = kind()
            .possible_values()
            .expect("listed")
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(
            listed,
            ["example-weighting", "label-blending", "attention-mask"]
        );
    }

    #[test]
    fn a_device_not_built_in_keeps_the_message_saying_how_to_build_it() {
        let parsed = Flags::try_parse_from(["x", "--device", "cuda"]);
        if trainer::device::ComputeDevice::Cuda.is_compiled_in() {
            assert!(parsed.is_ok());
        } else {
            let err = parsed.expect_err("not compiled in").to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
