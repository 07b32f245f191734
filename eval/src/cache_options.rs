//! The command-line options that choose one cache setting (codes or rates per side, the policy
//! and its transforms), shared by `perplexity` and `generate`.

use crate::codes::{self, CodeSpec};
use crate::ppl_sweep::Setting;
use anyhow::Result;
use fibquant::{CachePolicy, KeyScaling, SideCode};

/// Where a setting's policy starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyBase {
    /// The runtime's default policy.
    Default,
    /// No transform, no exact token.
    Plain,
}

/// Which sides are centered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Center {
    /// Neither.
    None,
    /// Keys only.
    Keys,
    /// Values only.
    Values,
    /// Keys and values.
    Both,
}

/// Per-channel key scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyScale {
    /// None.
    None,
    /// Balanced against the queries.
    Balanced,
}

/// One cache setting, from the command line.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CacheArgs {
    /// Key code: KxN (for example 4x256), q8_0, q4_0 or none (fp16). Conflicts with --k-rate.
    #[arg(long, conflicts_with = "k_rate")]
    pub k_code: Option<CodeSpec>,
    /// Key rate in bits per coordinate: the lowest-MSE embedded code at that rate
    /// [default: none for perplexity, 4 for generate].
    #[arg(long)]
    pub k_rate: Option<f64>,
    /// Value code: KxN, q8_0, q4_0 or none. Conflicts with --v-rate.
    #[arg(long, conflicts_with = "v_rate")]
    pub v_code: Option<CodeSpec>,
    /// Value rate in bits per coordinate [default: none for perplexity, 4 for generate].
    #[arg(long)]
    pub v_rate: Option<f64>,
    /// Cache policy of a FibQuant setting: the runtime's default (centering, balanced key
    /// scales, 4 sinks) or plain (every token encoded, no transform).
    #[arg(long, value_enum, default_value_t = PolicyBase::Default)]
    pub policy: PolicyBase,
    /// Which sides are centered [default: the policy's].
    #[arg(long, value_enum)]
    pub center: Option<Center>,
    /// Per-channel key scaling [default: the policy's].
    #[arg(long, value_enum)]
    pub key_scale: Option<KeyScale>,
    /// Exact (fp16) first positions [default: the policy's].
    #[arg(long)]
    pub sinks: Option<usize>,
    /// Exact (fp16) recent positions [default: the policy's].
    #[arg(long)]
    pub window: Option<usize>,
    /// Positions per block of a centered side's codes [default: the policy's, the head dim].
    #[arg(long)]
    pub block_len: Option<usize>,
    /// The first and the last this many layers keep fp16 keys and values.
    #[arg(long, default_value_t = 0)]
    pub boundary_layers: usize,
    /// llama.cpp block codes (q8_0, q4_0): rotate each row by a Hadamard transform first.
    #[arg(long)]
    pub hadamard: bool,
}

impl CacheArgs {
    /// The policy the options describe (its codes are set from the setting's sides later, see
    /// [`Setting::cache`]).
    pub fn policy(&self) -> CachePolicy {
        let mut p = match self.policy {
            PolicyBase::Default => CachePolicy::default(),
            PolicyBase::Plain => CachePolicy::plain(SideCode::Fp16, SideCode::Fp16),
        };
        if let Some(c) = self.center {
            p = p.with_centering(
                matches!(c, Center::Keys | Center::Both),
                matches!(c, Center::Values | Center::Both),
            );
        }
        if let Some(k) = self.key_scale {
            p = p.with_key_scaling(match k {
                KeyScale::None => KeyScaling::None,
                KeyScale::Balanced => KeyScaling::Balanced,
            });
        }
        if let Some(n) = self.sinks {
            p = p.with_sinks(n);
        }
        if let Some(w) = self.window {
            p = p.with_window(w);
        }
        if let Some(b) = self.block_len {
            p = p.with_block_len(b);
        }
        p
    }

    /// The setting at head dim `dim`. A side given neither a code nor a rate takes
    /// `default_rate` (`None`: uncompressed).
    pub fn setting(&self, dim: usize, default_rate: Option<f64>) -> Result<Setting> {
        let k_rate = self
            .k_rate
            .or(default_rate.filter(|_| self.k_code.is_none()));
        let v_rate = self
            .v_rate
            .or(default_rate.filter(|_| self.v_code.is_none()));
        let key = codes::resolve(dim, self.k_code, k_rate)?;
        let value = codes::resolve(dim, self.v_code, v_rate)?;
        Ok(Setting {
            name: format!("K {key} / V {value}"),
            key,
            value,
            policy: self.policy(),
            boundary_layers: self.boundary_layers,
            hadamard: self.hadamard,
        })
    }
}

impl Default for CacheArgs {
    /// No code, no rate, the default policy unchanged.
    fn default() -> Self {
        CacheArgs {
            k_code: None,
            k_rate: None,
            v_code: None,
            v_rate: None,
            policy: PolicyBase::Default,
            center: None,
            key_scale: None,
            sinks: None,
            window: None,
            block_len: None,
            boundary_layers: 0,
            hadamard: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cache: CacheArgs,
    }

    fn parse(args: &[&str]) -> CacheArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .cache
    }

    #[test]
    fn rates_codes_and_defaults() {
        let none = parse(&[]);
        assert_eq!(none, CacheArgs::default());
        let s = none.setting(64, None).unwrap();
        assert_eq!((s.key, s.value), (CodeSpec::None, CodeSpec::None));
        let four = codes::best_code(64, 4.0, false).unwrap();
        let s = none.setting(64, Some(4.0)).unwrap();
        assert_eq!((s.key, s.value), (four, four));
        // A code on one side keeps the default rate off that side only.
        let s = parse(&["--k-code", "none"]).setting(64, Some(4.0)).unwrap();
        assert_eq!((s.key, s.value), (CodeSpec::None, four));
        let s = parse(&["--k-rate", "2", "--v-code", "4x256"])
            .setting(64, None)
            .unwrap();
        assert_eq!(s.key, codes::best_code(64, 2.0, false).unwrap());
        assert_eq!(s.value, CodeSpec::Code { k: 4, n: 256 });
        assert!(Cli::try_parse_from(["x", "--k-code", "4x256", "--k-rate", "2"]).is_err());
    }

    #[test]
    fn policy_options_apply() {
        let a = parse(&[
            "--policy",
            "plain",
            "--center",
            "values",
            "--key-scale",
            "balanced",
            "--sinks",
            "2",
            "--window",
            "16",
            "--block-len",
            "8",
            "--boundary-layers",
            "1",
        ]);
        assert_ne!(a, CacheArgs::default());
        let p = a.policy();
        assert!(!p.center_keys && p.center_values);
        assert_eq!(p.key_scaling, KeyScaling::Balanced);
        assert_eq!((p.sinks, p.window, p.block_len), (2, 16, Some(8)));
        assert_eq!(a.setting(64, None).unwrap().boundary_layers, 1);
        assert_eq!(parse(&[]).policy(), CachePolicy::default());
    }
}
