//! Byte-level BPE tokenizer (GPT-2 style) built from a GGUF file's own metadata.
//!
//! Reads `tokenizer.ggml.{model,pre,tokens,merges,bos_token_id,eos_token_id}`. Only
//! `model = "gpt2"` is supported. The pre-tokenizer follows `tokenizer.ggml.pre`:
//! - `"smollm"` (SmolLM2; also llama.cpp's starcoder/refact/command-r): every numeric character
//!   becomes its own piece (HF `Digits(individual_digits=true)`, llama.cpp `\p{N}`), then the
//!   GPT-2 regex splits the rest;
//! - `"gpt2"` / `"default"`: the GPT-2 regex alone.
//!
//! Special tokens are not parsed out of the text: `encode` treats `<|im_start|>` like any text.
//! Bytes that have no byte token in the vocabulary (SmolLM2 lacks 21, e.g. 0x04) are dropped.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use fancy_regex::Regex;
use std::collections::HashMap;

/// The GPT-2 pre-tokenizer regex (as in HF `ByteLevel(use_regex=true)`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// How text is split into pieces before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2 regex only.
    Gpt2,
    /// Each numeric character isolated, then the GPT-2 regex (`tokenizer.ggml.pre = "smollm"`).
    DigitsThenGpt2,
}

/// A byte-level BPE tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    pre: PreTokenizer,
    regex: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// Beginning-of-sequence token id, if the GGUF names one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token id, if the GGUF names one.
    pub eos_id: Option<u32>,
}

/// GPT-2's reversible map from bytes to printable unicode characters.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid char")
        };
    }
    map
}

fn strings(meta: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let v = meta
        .get(key)
        .with_context(|| format!("GGUF metadata has no {key}"))?;
    v.to_vec()?
        .iter()
        .map(|s| Ok(s.to_string()?.clone()))
        .collect()
}

fn opt_u32(meta: &HashMap<String, Value>, key: &str) -> Option<u32> {
    meta.get(key).and_then(|v| v.to_u32().ok())
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let meta = &content.metadata;
        let model = meta
            .get("tokenizer.ggml.model")
            .context("GGUF has no tokenizer.ggml.model")?
            .to_string()?;
        if model != "gpt2" {
            bail!("tokenizer model {model:?} is not supported (only byte-level BPE \"gpt2\")");
        }
        let pre = match meta.get("tokenizer.ggml.pre").map(|v| v.to_string()) {
            None => PreTokenizer::Gpt2,
            Some(Ok(p)) => match p.as_str() {
                "gpt2" | "default" => PreTokenizer::Gpt2,
                "smollm" | "starcoder" | "refact" | "command-r" => PreTokenizer::DigitsThenGpt2,
                other => bail!("pre-tokenizer {other:?} is not supported"),
            },
            Some(Err(e)) => return Err(e.into()),
        };
        let tokens = strings(meta, "tokenizer.ggml.tokens")?;
        let merges = strings(meta, "tokenizer.ggml.merges")?;
        Self::new(
            tokens,
            &merges,
            pre,
            opt_u32(meta, "tokenizer.ggml.bos_token_id"),
            opt_u32(meta, "tokenizer.ggml.eos_token_id"),
        )
    }

    /// Builds a tokenizer from its byte-level vocabulary (`tokens[id]`) and merges (`"a b"`).
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        pre: PreTokenizer,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .with_context(|| format!("malformed merge {m:?}"))?;
            ranks.entry((a.to_string(), b.to_string())).or_insert(rank);
        }
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let n_bytes = byte_to_char
            .iter()
            .filter(|c| vocab.contains_key(c.encode_utf8(&mut [0; 4]) as &str))
            .count();
        // SmolLM2 lacks 21 byte tokens (bytes never or rarely seen in UTF-8: 0xC0, 0xF5.. and a
        // few control bytes); a vocabulary with few byte tokens is not byte-level BPE.
        if n_bytes < 128 {
            bail!("vocabulary has only {n_bytes} of 256 byte tokens: not a byte-level BPE");
        }
        Ok(Self {
            tokens,
            vocab,
            ranks,
            pre,
            regex: Regex::new(GPT2_PATTERN)?,
            byte_to_char,
            char_to_byte,
            bos_id,
            eos_id,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token string (byte-level form) of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Splits `text` into the pieces BPE runs on.
    pub fn pre_tokenize<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let mut out = Vec::new();
        let mut split_regex = |s: &'a str| -> Result<()> {
            for m in self.regex.find_iter(s) {
                out.push(m?.as_str());
            }
            Ok(())
        };
        match self.pre {
            PreTokenizer::Gpt2 => split_regex(text)?,
            PreTokenizer::DigitsThenGpt2 => {
                let mut start = 0;
                for (i, c) in text.char_indices() {
                    if c.is_numeric() {
                        if start < i {
                            split_regex(&text[start..i])?;
                        }
                        split_regex(&text[i..i + c.len_utf8()])?;
                        start = i + c.len_utf8();
                    }
                }
                if start < text.len() {
                    split_regex(&text[start..])?;
                }
            }
        }
        Ok(out)
    }

    /// Byte-level BPE of one piece, appending ids to `out`.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let word: String = piece
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if let Some(&id) = self.vocab.get(&word) {
            out.push(id);
            return;
        }
        // Characters (bytes) without a token are dropped before merging, as HF `tokenizers` does
        // for a BPE without `unk_token` (how the reference fixture was made).
        let mut syms: Vec<String> = word
            .chars()
            .map(String::from)
            .filter(|c| self.vocab.contains_key(c))
            .collect();
        loop {
            // The adjacent pair with the lowest merge rank (leftmost on ties).
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", syms[i], syms[i + 1]);
            syms[i] = merged;
            syms.remove(i + 1);
        }
        for s in syms {
            match self.vocab.get(&s) {
                Some(&id) => out.push(id),
                // A merge result outside the vocabulary: fall back to its characters, which all
                // have tokens (filtered above).
                None => out.extend(
                    s.chars()
                        .filter_map(|c| self.vocab.get(&c.to_string()).copied()),
                ),
            }
        }
    }

    /// Encodes `text` (no BOS/EOS added, special tokens not recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut memo: HashMap<&str, Vec<u32>> = HashMap::new();
        for piece in self.pre_tokenize(text)? {
            let cached = memo.entry(piece).or_insert_with(|| {
                let mut v = Vec::new();
                self.bpe(piece, &mut v);
                v
            });
            ids.extend_from_slice(cached);
        }
        Ok(ids)
    }

    /// Decodes ids back to text (invalid UTF-8 replaced by U+FFFD; unknown ids skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(tok) = self.tokens.get(id as usize) else {
                continue;
            };
            for c in tok.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'A' as usize], 'A');
    }

    fn toy() -> Tokenizer {
        let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        Tokenizer::new(tokens, &merges, PreTokenizer::DigitsThenGpt2, None, None).unwrap()
    }

    #[test]
    fn toy_bpe_and_round_trip() {
        let t = toy();
        let ids = t.encode("hello world 123").unwrap();
        let toks: Vec<&str> = ids.iter().map(|&i| t.token(i).unwrap()).collect();
        assert_eq!(
            toks,
            ["hello", "Ġw", "o", "r", "l", "d", "Ġ", "1", "2", "3"]
        );
        for s in ["hello world 123", "naïve — 日本 😀\n\n  x", ""] {
            assert_eq!(t.decode(&t.encode(s).unwrap()), s);
        }
    }

    #[test]
    fn pre_tokenizer_splits_like_gpt2() {
        let t = toy();
        let p = t.pre_tokenize("It's  a test\n\nby 12x").unwrap();
        assert_eq!(
            p,
            ["It", "'s", " ", " a", " test", "\n", "\n", "by", " ", "1", "2", "x"]
        );
    }
}
