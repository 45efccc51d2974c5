//! The default models: trained from phantoms on first use into the user's cache, keyed by the
//! default configs and the engine version, so a new config or engine never reuses a stale model.
//!
//! Layout: `$XDG_CACHE_HOME/dnvs-engine/models/<key>/` (or `~/.cache/...`), `<key>` a 64-bit
//! FNV-1a hash (hex) of the engine version, `synth::RENDERING` and every default config's name
//! and text; inside it
//! `localize.safetensors`, `localize_fine.safetensors`, `mc.safetensors`, `tb.safetensors`
//! (weights + card), and for a config with several folds the further members of its ensemble
//! (`tb.2.safetensors`, ..., [`member_paths`]). A model is
//! trained in `<key>/.train-<name>-<pid>/` and renamed into place only when training finished,
//! so a killed first run leaves no file a later run would trust (the temporary folder is removed
//! on the next attempt).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The default models, by name, and the config each is trained with (`configs/<file>`).
pub const DEFAULT_MODELS: [(&str, &str); 4] = [
    ("localize", "localize.json"),
    ("localize_fine", "localize_fine.json"),
    ("mc", "mc.json"),
    ("tb", "tb.json"),
];

/// Default models the repository ships trained (path relative to the configs folder's parent,
/// the repository root): installed into the cache by copying instead of training, because
/// training them takes far longer than a first run should (the localiser: ~30 min on two CPU
/// cores; its recipe is beside the file).
pub const SHIPPED_MODELS: [(&str, &str); 2] = [
    ("localize", "models/localize_unet8.safetensors"),
    ("localize_fine", "models/localize_fine_unet8.safetensors"),
];

/// The shipped file of model `name` for the configs folder `configs`, if there is one.
pub fn shipped_model(configs: &Path, name: &str) -> Option<PathBuf> {
    let root = configs.parent().unwrap_or(Path::new("."));
    SHIPPED_MODELS.iter().find(|(n, _)| *n == name).map(|(_, p)| root.join(p))
}

/// The files of model `name` in `dir`: `<name>.safetensors`, then the further members of an
/// ensemble, `<name>.2.safetensors`, `<name>.3.safetensors`, ... up to the first number missing.
/// Empty when `<name>.safetensors` is missing.
pub fn member_paths(dir: &Path, name: &str) -> Vec<PathBuf> {
    let first = dir.join(format!("{name}.safetensors"));
    if !first.is_file() {
        return Vec::new();
    }
    let mut paths = vec![first];
    for k in 2.. {
        let p = dir.join(format!("{name}.{k}.safetensors"));
        if !p.is_file() {
            break;
        }
        paths.push(p);
    }
    paths
}

/// `$XDG_CACHE_HOME/dnvs-engine/models`, else `$HOME/.cache/dnvs-engine/models`.
///
/// # Errors
/// [`Error::Config`] when neither variable is set.
pub fn cache_root() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache"),
            None => {
                return Err(Error::Config {
                    msg: "neither XDG_CACHE_HOME nor HOME is set: pass --models DIR".into(),
                })
            }
        },
    };
    Ok(base.join("dnvs-engine").join("models"))
}

/// FNV-1a, 64 bits: stable across platforms and Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The cache key of a set of `(name, text)` configs, the engine version and how `synth` renders
/// the phantoms they train on.
pub fn cache_key(configs: &[(String, String)]) -> String {
    let mut h = fnv1a(crate::VERSION.as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = fnv1a(crate::synth::RENDERING.as_bytes(), h);
    for (name, text) in configs {
        h = fnv1a(&[0], fnv1a(name.as_bytes(), h));
        h = fnv1a(&[0], fnv1a(text.as_bytes(), h));
    }
    format!("{h:016x}")
}

/// Reads the default configs from `dir` (the repository's `configs/`), in [`DEFAULT_MODELS`]
/// order.
///
/// # Errors
/// [`Error::Io`] naming a missing config.
/// A shipped model's SHA-256 is appended to its config's text, so the cache key changes when
/// the shipped file does.
pub fn read_default_configs(dir: &Path) -> Result<Vec<(String, String)>> {
    DEFAULT_MODELS
        .iter()
        .map(|(name, file)| {
            let p = dir.join(file);
            let mut text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            if let Some(shipped) = shipped_model(dir, name).filter(|p| p.is_file()) {
                let bytes = std::fs::read(&shipped).map_err(|e| Error::io(&shipped, e))?;
                text.push_str(&format!("\nshipped {}", crate::nn::model::sha256_hex(&bytes)));
            }
            Ok((file.to_string(), text))
        })
        .collect()
}

/// One default model's place in the cache.
#[derive(Clone, Debug)]
pub struct CachedModel {
    pub name: String,
    pub config: String,
    pub path: PathBuf,
}

impl CachedModel {
    pub fn present(&self) -> bool {
        self.path.is_file()
    }

    /// Its files: the model, or its ensemble's members ([`member_paths`]).
    pub fn members(&self) -> Vec<PathBuf> {
        self.path.parent().map_or_else(Vec::new, |dir| member_paths(dir, &self.name))
    }
}

/// The cache folder of a config set and its models.
pub fn cached_models(root: &Path, configs: &[(String, String)]) -> (PathBuf, Vec<CachedModel>) {
    let dir = root.join(cache_key(configs));
    let models = DEFAULT_MODELS
        .iter()
        .map(|(name, file)| CachedModel {
            name: name.to_string(),
            config: file.to_string(),
            path: dir.join(format!("{name}.safetensors")),
        })
        .collect();
    (dir, models)
}

/// Rough wall time (s) to train one model from its config on two CPU cores, validation
/// included: measured on the default configs (README main job, 2026-11-30 09:50 UTC, idle 2-core
/// VM, freed buffers kept in the process): an epoch of 48 patches of 48x64x32 took ~20 s at width
/// 4 and ~40 s at width 8 (the small networks are far from compute-bound, so time grows about
/// linearly with the width here); MC and TB together 16-18 min. Times the number of folds
/// trained: each is one member of the model's ensemble.
pub fn estimate_seconds(config_text: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(config_text).unwrap_or_default();
    let get = |path: &[&str], d: f64| {
        path.iter().try_fold(&v, |x, k| x.get(k)).and_then(|x| x.as_f64()).unwrap_or(d)
    };
    let patch: f64 = v["loaders"]["train_patch"]
        .as_array()
        .map_or(48.0 * 64.0 * 32.0, |a| a.iter().filter_map(|x| x.as_f64()).product());
    let epochs = get(&["training", "num_epochs"], 12.0);
    let patches = get(&["loaders", "train_dataset_size"], 48.0);
    let width = get(&["training", "width"], 4.0);
    // One model per configured fold (an ensemble); all folds when none are listed.
    let folds = v["training"]["folds"]
        .as_array()
        .map_or_else(|| get(&["training", "k_follds_number"], 5.0), |f| f.len() as f64);
    20.0 * epochs * (patches / 48.0) * (patch / (48.0 * 64.0 * 32.0)) * (width / 4.0) * folds
}

/// Trains every missing model of `models` with `train_one(model, temp_dir) -> trained files`
/// (one, or an ensemble's members in order), then renames them into place: the members after
/// the first as `<name>.2.safetensors`, ... and the first, which marks the model present, last.
/// `announce` hears each model before it starts, with the estimate in seconds.
///
/// # Errors
/// [`Error::Io`] for the cache folder; any error of `train_one` (nothing is left in place);
/// [`Error::Config`] when `train_one` returns no file.
pub fn train_missing(
    dir: &Path,
    models: &[CachedModel],
    configs: &[(String, String)],
    announce: &mut dyn FnMut(&CachedModel, f64),
    train_one: &mut dyn FnMut(&CachedModel, &Path) -> Result<Vec<PathBuf>>,
) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut trained = 0;
    for (m, (_, text)) in models.iter().zip(configs) {
        if m.present() {
            continue;
        }
        announce(m, estimate_seconds(text));
        let tmp = dir.join(format!(".train-{}-{}", m.name, std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let res = train_one(m, &tmp).and_then(|files| install_members(dir, m, &files));
        let _ = std::fs::remove_dir_all(&tmp);
        res?;
        trained += 1;
    }
    Ok(trained)
}

/// Renames `files` into place as the members of `m`, the first last; removes members a killed
/// earlier install left beyond the new count.
fn install_members(dir: &Path, m: &CachedModel, files: &[PathBuf]) -> Result<()> {
    let Some((first, rest)) = files.split_first() else {
        return Err(Error::Config { msg: format!("training {} produced no model file", m.name) });
    };
    for k in files.len() + 1.. {
        let stale = dir.join(format!("{}.{k}.safetensors", m.name));
        if std::fs::remove_file(&stale).is_err() {
            break;
        }
    }
    for (k, f) in rest.iter().enumerate() {
        let to = dir.join(format!("{}.{}.safetensors", m.name, k + 2));
        std::fs::rename(f, &to).map_err(|e| Error::io(&to, e))?;
    }
    std::fs::rename(first, &m.path).map_err(|e| Error::io(&m.path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_config_byte_and_is_stable() {
        let a = vec![("mc.json".to_string(), "{\"x\":1}".to_string())];
        let b = vec![("mc.json".to_string(), "{\"x\":2}".to_string())];
        assert_eq!(cache_key(&a), cache_key(&a.clone()));
        assert_ne!(cache_key(&a), cache_key(&b));
        assert_eq!(cache_key(&a).len(), 16);
        // Moving a byte between name and text changes the key (the separator).
        let c = vec![("mc.json{".to_string(), "\"x\":1}".to_string())];
        assert_ne!(cache_key(&a), cache_key(&c));
    }

    #[test]
    fn a_failed_training_leaves_nothing_and_a_finished_one_is_renamed_in() {
        let dir = std::env::temp_dir().join(format!("dnvs_models_{}", std::process::id()));
        let configs: Vec<(String, String)> =
            DEFAULT_MODELS.iter().map(|(_, f)| (f.to_string(), "{}".to_string())).collect();
        let (set, models) = cached_models(&dir, &configs);
        let mut announced = Vec::new();
        let err = train_missing(
            &set,
            &models,
            &configs,
            &mut |m, _| announced.push(m.name.clone()),
            &mut |m, _| Err(Error::Config { msg: format!("{} killed", m.name) }),
        );
        assert!(err.is_err());
        assert_eq!(announced, ["localize"]);
        assert!(models.iter().all(|m| !m.present()));
        assert_eq!(std::fs::read_dir(&set).unwrap().count(), 0, "no temp folder left");
        let n = train_missing(&set, &models, &configs, &mut |_, _| {}, &mut |m, tmp| {
            let f = tmp.join("best.safetensors");
            std::fs::write(&f, m.name.as_bytes()).unwrap();
            Ok(vec![f])
        })
        .unwrap();
        assert_eq!(n, DEFAULT_MODELS.len());
        assert!(models.iter().all(|m| m.present()));
        let again = train_missing(
            &set,
            &models,
            &configs,
            &mut |_, _| panic!("retrained"),
            &mut |_, _| unreachable!(),
        )
        .unwrap();
        assert_eq!(again, 0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(estimate_seconds("{}") > 100.0);
    }

    #[test]
    fn an_ensemble_is_installed_first_member_last_and_leftovers_go() {
        let dir = std::env::temp_dir().join(format!("dnvs_members_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let configs = vec![("tb.json".to_string(), "{}".to_string())];
        let m = CachedModel {
            name: "tb".into(),
            config: "tb.json".into(),
            path: dir.join("tb.safetensors"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        // A killed earlier install of a larger ensemble left members 2 and 3 but not the first.
        for k in [2, 3] {
            std::fs::write(dir.join(format!("tb.{k}.safetensors")), b"stale").unwrap();
        }
        assert!(m.members().is_empty(), "without the first file nothing is trusted");
        let n = train_missing(
            &dir,
            std::slice::from_ref(&m),
            &configs,
            &mut |_, _| {},
            &mut |_, tmp| {
                let files: Vec<PathBuf> =
                    (1..=2).map(|f| tmp.join(format!("fold{f}.st"))).collect();
                for (f, p) in files.iter().enumerate() {
                    std::fs::write(p, format!("fold{}", f + 1)).unwrap();
                }
                Ok(files)
            },
        )
        .unwrap();
        assert_eq!(n, 1);
        let members = m.members();
        assert_eq!(members, [dir.join("tb.safetensors"), dir.join("tb.2.safetensors")]);
        let text: Vec<String> =
            members.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        assert_eq!(text, ["fold1", "fold2"]);
        assert!(!dir.join("tb.3.safetensors").exists(), "the stale third member is gone");
        let none = train_missing(&dir, &[m], &configs, &mut |_, _| {}, &mut |_, _| Ok(vec![]));
        assert!(none.is_ok(), "present: not trained again");
        std::fs::remove_dir_all(&dir).unwrap();
        let two = r#"{"training": {"folds": [1, 2]}}"#;
        let one = r#"{"training": {"folds": [1]}}"#;
        assert!((estimate_seconds(two) - 2.0 * estimate_seconds(one)).abs() < 1e-9);
    }
}
