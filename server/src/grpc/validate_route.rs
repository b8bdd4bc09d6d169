//! `sigil.v1.IdentityService/Validate`'s own route, in front of the
//! generated `IdentityService` server (which serves every other method).
//!
//! A valid token's answer is the same bytes on every call: `valid`, no
//! failure, and the claims, which cannot change over the token's life. So
//! the route encodes that answer once per verified token, keeps it with the
//! token in the signature cache ([`VerifiedToken::valid_answer`]) and sends
//! those bytes, instead of cloning the claims into a fresh
//! `ValidateResponse` and encoding it on every call (about a tenth of a hot
//! `Validate`'s instructions). Whether the token is valid *now* is decided
//! on every call exactly as before (signature cache, time window, audience,
//! revocation index); only a valid verdict is answered with the kept bytes,
//! and a refusal is encoded afresh.
//!
//! The request goes through the same codec and limits as on the generated
//! route: the strict decoder (undecodable bytes are `INVALID_ARGUMENT`) and
//! the server's message size caps.

use std::{convert::Infallible, sync::Arc};

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use sigil_proto::{
    codec::{StrictCodec, StrictDecoder},
    pb::{self, identity_service_server::IdentityServiceServer},
};
use tonic::{
    Status,
    body::Body,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    codegen::{Body as RequestBody, BoxFuture, Context, Poll, StdError},
    server::{Grpc, NamedService, UnaryService},
};

use super::{convert, identity::IdentityApi};
use crate::domain::token::{ValidationFailure, VerifiedToken};

/// The path the route takes over.
const VALIDATE_PATH: &str = "/sigil.v1.IdentityService/Validate";

/// The generated `IdentityService` server, with `Validate` routed here.
#[derive(Clone)]
pub(crate) struct IdentityRoutes {
    generated: IdentityServiceServer<IdentityApi>,
    api: IdentityApi,
    max_decoding: usize,
    max_encoding: usize,
}

impl IdentityRoutes {
    /// Serves `api`, with the same message size caps on both routes.
    pub(crate) fn new(api: IdentityApi, max_decoding: usize, max_encoding: usize) -> Self {
        let generated = IdentityServiceServer::new(api.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding);
        Self { generated, api, max_decoding, max_encoding }
    }
}

impl NamedService for IdentityRoutes {
    const NAME: &'static str = <IdentityServiceServer<IdentityApi> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for IdentityRoutes
where
    B: RequestBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != VALIDATE_PATH {
            return self.generated.call(request);
        }
        let call = ValidateCall(self.api.clone());
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc =
                Grpc::new(ValidateCodec).apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            Ok(grpc.unary(call, request).await)
        })
    }
}

/// One `Validate` call, answered with encoded bytes.
struct ValidateCall(IdentityApi);

impl UnaryService<pb::ValidateRequest> for ValidateCall {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<pb::ValidateRequest>) -> Self::Future {
        let answer = self.0.verdict(request.into_inner()).map(|verdict| tonic::Response::new(encoded(verdict)));
        Box::pin(std::future::ready(answer))
    }
}

/// The encoded `ValidateResponse` of `verdict`: a valid token's kept bytes,
/// or a refusal encoded now.
fn encoded(verdict: Result<Arc<VerifiedToken>, ValidationFailure>) -> Bytes {
    match verdict {
        Ok(token) => token.valid_answer(|token| convert::validate_response(Ok(token)).encode_to_vec().into()).clone(),
        Err(failure) => convert::validate_response(Err(failure)).encode_to_vec().into(),
    }
}

/// The strict codec's decoder for the request; the answer is already bytes.
#[derive(Clone, Copy, Default)]
struct ValidateCodec;

impl Codec for ValidateCodec {
    type Encode = Bytes;
    type Decode = pb::ValidateRequest;
    type Encoder = EncodedAnswer;
    type Decoder = StrictDecoder<pb::ValidateRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedAnswer
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictCodec::<pb::ValidateResponse, pb::ValidateRequest>::default().decoder()
    }
}

/// Writes an answer that is already an encoded message.
struct EncodedAnswer;

impl Encoder for EncodedAnswer {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
