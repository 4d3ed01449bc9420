//! A console session driven over HTTP, without a browser: signs in through the sign-in form (its CSRF
//! cookie and token), keeps the session cookie, reads each page's CSRF token, and posts forms.

use reqwest::{StatusCode, header};

use super::app::TestApp;

/// One signed-in (or not yet) browser-like client.
pub struct ConsoleClient {
    pub base: String,
    client: reqwest::Client,
    /// The session cookie's value (`herald_session`).
    pub session: Option<String>,
    /// The `Set-Cookie` header of the sign-in answer, as sent.
    pub session_cookie_header: String,
}

/// An answer: status, headers and body text.
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The first hidden `csrf` field's value.
    pub fn csrf(&self) -> Option<String> {
        let start = self.body.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_string())
    }
}

/// The value of cookie `name` in a response's `Set-Cookie` headers.
pub fn set_cookie<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

impl ConsoleClient {
    pub fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client");
        Self { base: app.base.clone(), client, session: None, session_cookie_header: String::new() }
    }

    /// Signs in with `credential`; panics unless it worked.
    pub async fn signed_in(app: &TestApp, credential: &str) -> Self {
        let mut console = Self::new(app);
        let answer = console.sign_in(credential).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "sign-in: {}", answer.body);
        console
    }

    /// Posts the sign-in form (with its CSRF cookie and token); keeps the session cookie it sets.
    pub async fn sign_in(&mut self, credential: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf().expect("the sign-in form has a CSRF token");
        let cookie = set_cookie(&form.headers, "herald_sign_in").map(cookie_value).expect("a sign-in cookie");
        let answer = self
            .send(
                self.client
                    .post(format!("{}/console/sign-in", self.base))
                    .header(header::COOKIE, format!("herald_sign_in={cookie}")),
                &[("csrf", csrf.as_str()), ("credential", credential)],
            )
            .await;
        if let Some(set) = set_cookie(&answer.headers, "herald_session") {
            self.session_cookie_header = set.to_string();
            self.session = Some(cookie_value(set));
        }
        answer
    }

    fn with_session(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.session {
            Some(token) => request.header(header::COOKIE, format!("herald_session={token}")),
            None => request,
        }
    }

    async fn read(response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Page { status, headers, body }
    }

    async fn send(&self, request: reqwest::RequestBuilder, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let response = request
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("sent");
        Self::read(response).await
    }

    pub async fn get(&self, path: &str) -> Page {
        let response =
            self.with_session(self.client.get(format!("{}{path}", self.base))).send().await.expect("sent");
        Self::read(response).await
    }

    /// Posts `fields` as they are (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        let mut request = self.with_session(self.client.post(format!("{}{path}", self.base)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request, fields).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    pub async fn post(&self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(from).await;
        let csrf = page.csrf().unwrap_or_else(|| panic!("{from} has a form: {} {}", page.status, page.body));
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all, &[]).await
    }
}
