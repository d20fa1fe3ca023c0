//! llama-server's utility endpoints beside the OpenAI ones (`POST /apply-template`,
//! `/tokenize`, `/detokenize`): the chat template and the tokenizer exactly as the completion
//! and chat endpoints use them, so a client can compare prompts token by token with
//! llama-server's. [`routes`] are merged into [`super::server::start`]'s router.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::chat::{chat_prompt, prompt_ids, ChatFormat};
use super::protocol::{bad, json_response, parse, Api, Prompt};

/// What the endpoints use of the server: the chat endpoint's template, tokenizer and BOS.
pub(super) struct Texts {
    pub(super) chat: Arc<ChatFormat>,
    pub(super) tok: Arc<Tokenizer>,
    pub(super) bos: Option<u32>,
}

/// The three routes, with their own state.
pub(super) fn routes(t: Texts) -> Router {
    Router::new()
        .route("/apply-template", post(apply_template))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .with_state(Arc::new(t))
}

/// llama-server's `POST /apply-template`: a chat request's prompt as the chat endpoint makes
/// it, `{"prompt": text}` (the model's chat template rendered; a leading BOS text dropped where
/// the tokenizer puts BOS first), without running it.
async fn apply_template(State(s): State<Arc<Texts>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("malformed JSON body: {e}"), None),
    };
    let req = match parse(&v, Api::Chat) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Prompt::Chat {
        messages,
        add_generation_prompt,
        kwargs,
    } = &req.prompt
    else {
        return bad("`messages` is required".into(), Some("messages"));
    };
    match chat_prompt(
        &s.chat,
        &s.tok,
        s.bos,
        messages,
        *add_generation_prompt,
        kwargs,
    ) {
        Ok((text, _)) => json_response(StatusCode::OK, json!({ "prompt": text })),
        Err(m) => bad(m, Some("messages")),
    }
}

/// llama-server's `POST /tokenize`: `{"content", "add_special" (default false: BOS first where
/// the model puts it there), "parse_special" (default true: special-token texts become their
/// token), "with_pieces" (default false)}` in; `{"tokens": [id, ...]}`, or with pieces
/// `{"tokens": [{"id", "piece"}, ...]}`, out. The tokenizer and encoding are the completion
/// endpoint's.
async fn tokenize(State(s): State<Arc<Texts>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("malformed JSON body: {e}"), None),
    };
    let Some(content) = v["content"].as_str() else {
        return bad(
            "`content` must be a string (the text to tokenize)".into(),
            Some("content"),
        );
    };
    let mut flags = [
        ("add_special", false),
        ("parse_special", true),
        ("with_pieces", false),
    ];
    for (k, value) in flags.iter_mut() {
        match &v[*k] {
            Value::Null => {}
            Value::Bool(b) => *value = *b,
            _ => return bad(format!("`{k}` must be true or false"), Some(k)),
        }
    }
    let [(_, add_special), (_, parse_special), (_, with_pieces)] = flags;
    // Special-token texts kept as text need the tokenizer's other setting: a copy, so that
    // the one every request shares is never changed.
    let plain;
    let tok: &tokenizers::Tokenizer = if parse_special {
        &s.tok
    } else {
        let mut t = (*s.tok).clone();
        t.set_encode_special_tokens(true);
        plain = t;
        &plain
    };
    let ids = match if add_special {
        prompt_ids(tok, s.bos, content).map_err(|e| e.to_string())
    } else {
        crate::models::tokenizers::encode(tok, content).map_err(|e| e.to_string())
    } {
        Ok(ids) => ids,
        Err(e) => return bad(format!("cannot tokenize `content`: {e}"), Some("content")),
    };
    if !with_pieces {
        return json_response(StatusCode::OK, json!({ "tokens": ids }));
    }
    let mut pieces = Vec::with_capacity(ids.len());
    for id in ids {
        match crate::models::tokenizers::decode(&s.tok, &[id]) {
            Ok(piece) => pieces.push(json!({"id": id, "piece": piece})),
            Err(e) => return bad(format!("cannot decode token {id}: {e}"), Some("content")),
        }
    }
    json_response(StatusCode::OK, json!({ "tokens": pieces }))
}

/// llama-server's `POST /detokenize`: `{"tokens": [id, ...]}` in, `{"content": text}` out.
async fn detokenize(State(s): State<Arc<Texts>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("malformed JSON body: {e}"), None),
    };
    let vocab = s.tok.get_vocab_size(true);
    let ids: Option<Vec<u32>> = v["tokens"].as_array().and_then(|a| {
        a.iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&i| (i as usize) < vocab)
                    .map(|i| i as u32)
            })
            .collect()
    });
    let Some(ids) = ids else {
        return bad(
            format!("`tokens` must be an array of token ids below the vocabulary size {vocab}"),
            Some("tokens"),
        );
    };
    match crate::models::tokenizers::decode(&s.tok, &ids) {
        Ok(content) => json_response(StatusCode::OK, json!({ "content": content })),
        Err(e) => bad(format!("cannot decode `tokens`: {e}"), Some("tokens")),
    }
}
