//! Choosing the next token from the logits: greedy at temperature 0, else temperature and nucleus (top-p)
//! sampling with a seeded generator, so that a request with a `seed` is reproducible.

use crate::Error;

/// How a completion picks its tokens (OpenAI's `temperature`, `top_p`, `seed`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy (argmax, lowest id on ties: the reference's rule); at most [`MAX_TEMPERATURE`].
    pub temperature: f32,
    /// Nucleus: sample among the most likely tokens whose probabilities sum to at least this; in (0, 1].
    pub top_p: f32,
    /// The generator's seed. The caller draws one from its system RNG when the client gives none.
    pub seed: u64,
}

/// OpenAI's upper bound for `temperature`.
pub const MAX_TEMPERATURE: f32 = 2.0;

impl SamplingParams {
    /// Greedy decoding: the reference behaviour the tests compare with onnxruntime.
    pub const GREEDY: SamplingParams = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };

    /// Checks the ranges (a client sets these values): temperature in [0, 2], top_p in (0, 1], both finite.
    pub fn check(&self) -> Result<(), Error> {
        if !(0.0..=MAX_TEMPERATURE).contains(&self.temperature) {
            return Err(Error::Sampling {
                field: "temperature",
                reason: format!("{} is outside [0, {MAX_TEMPERATURE}]", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Sampling {
                field: "top_p",
                reason: format!("{} is outside (0, 1]", self.top_p),
            });
        }
        Ok(())
    }
}

/// Picks tokens for one completion. Holds its generator's state (not secret: it only decides which of the
/// model's own likely tokens comes next, and a client that set the seed knows it).
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    /// Scratch for the candidates of one step (id, probability), kept to avoid a 49k-entry allocation a token.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler for `params` (checked).
    pub fn new(params: SamplingParams) -> Result<Self, Error> {
        params.check()?;
        Ok(Sampler {
            params,
            rng: SplitMix64(params.seed),
            candidates: Vec::new(),
        })
    }

    /// The next token for these logits (one per vocabulary entry). Non-finite logits are an error: a model
    /// that produces NaN must not turn into an arbitrary token.
    pub fn pick(&mut self, logits: &[f32]) -> Result<u32, Error> {
        if logits.is_empty() {
            return Err(Error::Logits("the model produced no logits".into()));
        }
        if let Some(ix) = logits.iter().position(|l| !l.is_finite()) {
            return Err(Error::Logits(format!("logit {ix} is not finite")));
        }
        if self.params.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        let mut total = 0f64;
        for (id, &l) in logits.iter().enumerate() {
            let p = ((l - max) * inv_t).exp();
            total += f64::from(p);
            self.candidates.push((token_id(id), p));
        }
        // Most likely first, ties by lower id (deterministic for a seed).
        self.candidates
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0;
        let mut mass = 0f64;
        let nucleus = f64::from(self.params.top_p) * total;
        for &(_, p) in &self.candidates {
            mass += f64::from(p);
            kept += 1;
            if mass >= nucleus {
                break;
            }
        }
        let mut point = self.rng.next_unit() * mass;
        for &(id, p) in &self.candidates[..kept] {
            point -= f64::from(p);
            if point < 0.0 {
                return Ok(id);
            }
        }
        // Rounding left the point at the end of the nucleus: its last token.
        Ok(self.candidates[kept - 1].0)
    }
}

/// The index of the largest logit, the lowest on ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (ix, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = ix;
        }
    }
    token_id(best)
}

fn token_id(ix: usize) -> u32 {
    // Vocabularies are far below 2^32 entries (the model's logits width is checked at load).
    u32::try_from(ix).unwrap_or(u32::MAX)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a few lines, statistically sound for sampling, reproducible from
/// a seed. Not a cryptographic generator, and it need not be one.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 bits.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn greedy_takes_the_lowest_id_among_equal_maxima() {
        let mut s = Sampler::new(SamplingParams::GREEDY).unwrap();
        assert_eq!(s.pick(&[0.0, 3.0, 1.0, 3.0]).unwrap(), 1);
    }

    #[test]
    fn non_finite_logits_are_refused() {
        let mut s = Sampler::new(SamplingParams::GREEDY).unwrap();
        let err = s.pick(&[0.0, f32::NAN]).unwrap_err();
        assert!(err.to_string().contains("logit 1 is not finite"), "{err}");
        assert!(s.pick(&[]).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        for (t, p, field) in [
            (-0.1, 1.0, "temperature"),
            (2.5, 1.0, "temperature"),
            (f32::NAN, 1.0, "temperature"),
            (1.0, 0.0, "top_p"),
            (1.0, 1.5, "top_p"),
            (1.0, f32::NAN, "top_p"),
        ] {
            let err = Sampler::new(SamplingParams {
                temperature: t,
                top_p: p,
                seed: 1,
            })
            .unwrap_err();
            assert!(err.to_string().contains(field), "{t} {p}: {err}");
        }
    }

    #[test]
    fn a_seed_reproduces_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.5).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: 42,
        };
        let run = |params| {
            let mut s = Sampler::new(params).unwrap();
            (0..200)
                .map(|_| s.pick(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(params), run(params));
        assert_ne!(run(params), run(SamplingParams { seed: 43, ..params }));
        // Every logit is one of 0, 0.5, …, 3.0; the 14 tokens at 3.0 hold well over 5% of the mass.
        let nucleus = run(SamplingParams {
            top_p: 0.05,
            ..params
        });
        assert!(nucleus.iter().all(|&id| id % 7 == 6), "{nucleus:?}");
        // Full nucleus: other tokens appear too.
        assert!(run(params).iter().any(|&id| id % 7 != 6));
    }

    #[test]
    fn low_temperature_approaches_greedy() {
        let logits = [1.0, 2.0, 5.0, 4.9];
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.01,
            top_p: 1.0,
            seed: 7,
        })
        .unwrap();
        assert!((0..100).all(|_| s.pick(&logits).unwrap() == 2));
    }
}
