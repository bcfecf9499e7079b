//! The config file: its keys are the settings' field names; an unknown key is an error, and the
//! flags are laid over it.

use super::*;

/// The config file: the keys of [`ServeArgs`] (each field's name), plus `token_secret`.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub settings: ServeArgs,
    /// The token signing secret (at least 32 bytes). Without one, embedded mode generates one
    /// into the data directory.
    pub token_secret: Option<String>,
}

/// Keys the file may hold that are not settings of [`ServeArgs`].
pub(super) const FILE_ONLY_KEYS: [&str; 1] = ["token_secret"];
/// Settings that only a flag or the environment can give.
pub(super) const NOT_IN_FILE: [&str; 1] = ["config"];

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub(super) fn parse(text: &str) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        // `ServeArgs` flattens `CommonArgs`, which rules out serde's `deny_unknown_fields`:
        // the known keys are the settings clap knows, by field name.
        let known = known_keys();
        if let Some(key) = table
            .keys()
            .find(|k| !known.contains(k.as_str()) && !FILE_ONLY_KEYS.contains(&k.as_str()))
        {
            bail!("unknown field `{key}`, expected one of the settings `scalify serve --help` lists (with '_' for '-') or `token_secret`");
        }
        let token_secret = match table.remove("token_secret") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => bail!("token_secret must be a string"),
        };
        Ok(FileConfig {
            settings: table.try_into()?,
            token_secret,
        })
    }
}

/// The config-file keys: the field names of [`ServeArgs`] (clap's argument ids).
pub(super) fn known_keys() -> std::collections::HashSet<String> {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand("serve")
        .map(|serve| {
            serve
                .get_arguments()
                .map(|a| a.get_id().to_string())
                .filter(|id| !NOT_IN_FILE.contains(&id.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

impl ServeArgs {
    /// These settings laid over `below`: a setting given here wins, any other comes from
    /// `below`. (`persister` is a switch: given here means on.)
    pub(super) fn over(&self, below: &ServeArgs) -> anyhow::Result<ServeArgs> {
        let mut merged = to_map(below)?;
        for (key, value) in to_map(self)? {
            if !(value.is_null() || value == serde_json::Value::Bool(false)) {
                merged.insert(key, value);
            }
        }
        Ok(serde_json::from_value(serde_json::Value::Object(merged))?)
    }
}

pub(super) fn to_map(
    args: &ServeArgs,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(args)? {
        serde_json::Value::Object(map) => {
            Ok(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        _ => bail!("settings are not a map"),
    }
}

pub(super) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
