//! The config file `apply` and `diff` send: read, run through
//! `--env-subst` when asked, and sent as it is (YAML, or JSON for `*.json`)
//! so the control plane's errors name the user's own fields. Parsed on the
//! client only when the CLI must change it (`--select-tag`), with the same
//! parser the control plane uses.

use std::path::PathBuf;

use clap::Args;
use portico_shared::GatewayConfig;
use portico_shared::parse::{from_json, from_yaml};

use crate::client::CliError;
use crate::envsubst;

#[derive(Debug, Clone, Args)]
pub struct Source {
    /// The config file: YAML, or JSON when its name ends in .json.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Replace ${NAME} in the file by the environment variable NAME before parsing ($$ is a literal $); an unset variable is an error.
    #[arg(long)]
    pub env_subst: bool,
}

/// A config file's bytes, ready to send.
pub struct Document {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    file: String,
}

impl Source {
    pub fn read(&self) -> Result<Document, CliError> {
        let file = self.file.display().to_string();
        let mut body = std::fs::read(&self.file).map_err(|e| CliError::Usage(format!("cannot read {file}: {e}")))?;
        if self.env_subst {
            let text = String::from_utf8(body).map_err(|_| CliError::File { file: file.clone(), problems: vec!["is not UTF-8".into()] })?;
            let substituted = envsubst::substitute(&text, |name| std::env::var(name).ok())
                .map_err(|problems| CliError::File { file: file.clone(), problems })?;
            body = substituted.into_bytes();
        }
        let json = self.file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        Ok(Document { body, content_type: if json { "application/json" } else { "application/yaml" }, file })
    }
}

impl Document {
    /// The file as a config, errors naming the file and the field.
    pub fn parse(&self) -> Result<GatewayConfig, CliError> {
        let parsed = if self.content_type == "application/json" { from_json(&self.body) } else { from_yaml(&self.body) };
        parsed.map_err(|e| {
            let problem = if e.field().is_empty() { e.message().to_owned() } else { e.to_string() };
            CliError::File { file: self.file.clone(), problems: vec![problem] }
        })
    }

    /// A document whose content is `config`, as JSON.
    pub fn replaced(&self, config: &GatewayConfig) -> Result<Self, CliError> {
        let body = serde_json::to_vec(config).map_err(|e| CliError::Usage(format!("cannot encode the config: {e}")))?;
        Ok(Self { body, content_type: "application/json", file: self.file.clone() })
    }
}
