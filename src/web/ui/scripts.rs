//! `GET /ui/api/scripts`: the read-only scripts picker of the job form. Lists the programs an
//! EXTERNAL job may run — regular files of the scripts directory and its subdirectories, links
//! only when they resolve inside it (the executor's own rule, `resolve_program`) — with size,
//! modification time and first lines. Admins only, like EXTERNAL jobs; nothing is ever written.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::error::ServiceError;
use crate::run_files::resolve_program;
use crate::web::AppState;
use crate::web::api::auth::CurrentUser;

/// At most this many programs are listed (a scripts directory is a handful of files).
const MAX_PROGRAMS: usize = 500;
/// First lines shown per program, each cut to `MAX_LINE_CHARS`.
const FIRST_LINES: usize = 5;
const MAX_LINE_CHARS: usize = 200;

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Program {
    /// The path relative to the scripts directory, as a job's `command` names it.
    pub name: String,
    pub size: u64,
    /// Epoch milliseconds.
    pub modified: Option<i64>,
    pub first_lines: Vec<String>,
}

fn first_lines(path: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // Bounded read: a large binary must not be read whole.
    let reader = BufReader::new(file.take((FIRST_LINES * MAX_LINE_CHARS * 4) as u64));
    reader
        .split(b'\n')
        .take(FIRST_LINES)
        .map_while(Result::ok)
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\r')
                .chars()
                .take(MAX_LINE_CHARS)
                .collect()
        })
        .collect()
}

/// The programs of `scripts_dir`, sorted by name.
pub fn list_programs(scripts_dir: &Path) -> Vec<Program> {
    let mut names = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(scripts_dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = rel.join(entry.file_name());
            match entry.file_type() {
                // Directories are walked only when real (a link to a directory is not followed).
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(_) => names.push(path),
                Err(_) => {}
            }
        }
        if names.len() > MAX_PROGRAMS * 2 {
            break;
        }
    }
    let mut programs: Vec<Program> = names
        .into_iter()
        .filter_map(|rel| {
            let name = rel.to_str()?.to_string();
            let resolved = resolve_program(scripts_dir, &name).ok()?;
            let meta = std::fs::metadata(&resolved).ok()?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64);
            Some(Program {
                name,
                size: meta.len(),
                modified,
                first_lines: first_lines(&resolved),
            })
        })
        .collect();
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    programs.truncate(MAX_PROGRAMS);
    programs
}

pub async fn scripts(
    state: web::Data<AppState>,
    me: CurrentUser,
) -> Result<HttpResponse, ServiceError> {
    me.require_admin()?;
    let dir = state.settings.scripts_dir();
    let programs = tokio::task::spawn_blocking(move || list_programs(&dir)).await?;
    Ok(HttpResponse::Ok().json(programs))
}
