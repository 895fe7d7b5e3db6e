//! The streamed half of a request: every chunk of a started provider stream through the
//! stream-chunk hooks to the client, then the post-hooks on the assembled response.

use tokio::sync::mpsc;

use super::{Pipeline, Session, StreamEvent, apply_policy};
use crate::error::GatewayError;
use crate::hooks::{ChunkOutcome, Hook};
use crate::stream::{Assembler, ChatStream};

impl Pipeline {
    /// Carries a started stream to its end: every chunk goes through the stream-chunk hooks of
    /// the links whose pre-hook ran (post-hook order), which may edit it, drop it or end the
    /// stream with an error; what survives is sent to `out` and assembled. When the stream ends
    /// (or the client goes away: `out` closed), the post-hooks see the assembled response, or
    /// the error; a final error goes through the error stage and is sent as the last event.
    /// `out` is bounded, so a slow client slows the provider instead of filling memory.
    pub async fn drive_stream(
        &self,
        session: &mut Session,
        ran: &[usize],
        mut stream: ChatStream,
        out: &mpsc::Sender<StreamEvent>,
    ) {
        let mut assembler = Assembler::new(stream.head());
        let mut ended = None;
        'chunks: while let Some(item) = stream.chunks.recv().await {
            let mut chunk = match item {
                Ok(chunk) => chunk,
                Err(err) => {
                    ended = Some(err);
                    break;
                }
            };
            for &i in ran.iter().rev() {
                if !session.chain.links[i].hooks.stream_chunk {
                    continue;
                }
                let result = session
                    .with_instance(i, Hook::StreamChunk, async |link, instance, ctx| {
                        link.plugin.stream_chunk(instance, ctx, &chunk).await
                    })
                    .await;
                match result {
                    Ok(ChunkOutcome::Pass) => {}
                    Ok(ChunkOutcome::Emit(mut next)) => {
                        // Fields the plugin world does not model pass through untouched.
                        next.delta_extra = std::mem::take(&mut chunk.delta_extra);
                        chunk = next;
                    }
                    Ok(ChunkOutcome::Drop) => continue 'chunks,
                    Ok(ChunkOutcome::Fail(err)) => {
                        ended = Some(err);
                        break 'chunks;
                    }
                    Err(failure) => {
                        if let Err(err) =
                            apply_policy(&session.chain.links[i], &session.ctx, &failure)
                        {
                            ended = Some(err);
                            break 'chunks;
                        }
                    }
                }
            }
            assembler.push(&chunk);
            if out.send(StreamEvent::Chunk(chunk)).await.is_err() {
                ended = Some(
                    GatewayError::new(499, "the client closed the connection during the stream")
                        .with_code("client_closed")
                        .no_fallbacks(),
                );
                break;
            }
        }
        // Dropping the stream stops the provider's producer.
        drop(stream);
        let outcome = match ended {
            Some(err) => Err(err),
            None => Ok(assembler.finish()),
        };
        match self.post_stage(session, ran, outcome).await {
            Ok(_) => {
                let _ = out.send(StreamEvent::Done).await;
            }
            Err(err) => {
                let err = self.finish_error(session, err).await;
                let _ = out.send(StreamEvent::Error(err)).await;
            }
        }
    }
}
