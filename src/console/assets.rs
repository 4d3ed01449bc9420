//! The console's static files, embedded in the binary (`assets/`): served as `/console/assets/NAME-HASH.EXT`,
//! where HASH is the start of the file's SHA-256, so a page always names the version it was rendered
//! with and browsers may cache each name for a year. Nothing is fetched from elsewhere.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// The name pages link to (`console-1a2b3c4d5e6f.css`).
    versioned: String,
    content_type: &'static str,
    body: &'static [u8],
}

/// The files and their content types, by plain name.
const FILES: [(&str, &str, &[u8]); 3] = [
    ("console.css", "text/css; charset=utf-8", include_bytes!("assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("assets/console.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("assets/favicon.svg")),
];

static ASSETS: LazyLock<Vec<(&'static str, Asset)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| {
            let hash = hex::encode(&Sha256::digest(body)[..6]);
            let (stem, extension) = name.rsplit_once('.').unwrap_or((name, ""));
            (name, Asset { versioned: format!("{stem}-{hash}.{extension}"), content_type, body })
        })
        .collect()
});

/// The URL of an embedded file by its plain name (`console.css`).
pub(crate) fn url(name: &str) -> String {
    ASSETS
        .iter()
        .find(|(plain, _)| *plain == name)
        .map_or_else(String::new, |(_, asset)| format!("/console/assets/{}", asset.versioned))
}

/// `GET /console/assets/{name}`: a file by its versioned name, cached for a year.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, asset)) = ASSETS.iter().find(|(_, asset)| asset.versioned == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
