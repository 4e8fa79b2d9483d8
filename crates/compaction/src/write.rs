//! Writing one planned output: merged by the engine and streamed to R2 as it fills, in one PUT
//! when it is a single part, else as a multipart upload whose id is staged in D1 first (so that
//! the clean-up can abort it if the run never commits).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::plan::PlannedOutput;
use crate::run_commit::OutputRecord;
use fusou_core::index::{self, SqlValue};
use fusou_engine::segment::{FragmentInput, Quarantined, Scan};
use fusou_engine::{EngineConfig, binpack, merge};
use fusou_ports::{Blobs, PortResult, Sql};

/// What merging one output leaves behind: the output, and the segments it had to leave out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Merged {
    pub output: OutputRecord,
    pub quarantined: Vec<Quarantined>,
}

/// Where one output goes: its staged key.
pub(crate) struct Target<'a, S, B> {
    pub key: &'a str,
    pub sql: &'a S,
    pub blobs: &'a B,
}

/// Parts on their way to one object: a multipart upload begun at the first full part (its id
/// recorded with the staged key, so that clean-up can abort it), or a single PUT when the whole
/// output is one part.
pub(crate) struct PartUpload<'t, 'a, S, B> {
    target: &'t Target<'a, S, B>,
    multipart: Option<(String, Vec<(u16, String)>)>,
}

impl<'t, 'a, S: Sql, B: Blobs> PartUpload<'t, 'a, S, B> {
    pub(crate) fn new(target: &'t Target<'a, S, B>) -> Self {
        Self { target, multipart: None }
    }

    pub(crate) async fn send(&mut self, part: Bytes) -> PortResult<()> {
        let Target { key, sql, blobs, .. } = *self.target;
        let (id, parts) = match &mut self.multipart {
            Some(m) => m,
            None => {
                let id = blobs.create_multipart(key).await?;
                sql.run(index::STAGED_UPLOAD, &[SqlValue::from(key), SqlValue::from(id.as_str())]).await?;
                self.multipart.insert((id, Vec::new()))
            }
        };
        let number = u16::try_from(parts.len() + 1).map_err(|_| "more than 65535 parts".to_string())?;
        let etag = blobs.upload_part(key, id, number, part).await?;
        parts.push((number, etag));
        Ok(())
    }

    pub(crate) async fn finish(&mut self, last: Vec<Bytes>) -> PortResult<()> {
        let Target { key, blobs, .. } = *self.target;
        match self.multipart.take() {
            None if last.len() <= 1 => blobs.put(key, last.into_iter().next().unwrap_or_default()).await,
            taken => {
                self.multipart = taken;
                for part in last {
                    self.send(part).await?;
                }
                let (id, parts) = self.multipart.take().expect("begun by send");
                blobs.complete_multipart(key, &id, parts).await
            }
        }
    }

    pub(crate) async fn abort(&mut self) {
        if let Some((id, _)) = self.multipart.take() {
            // Best effort: clean-up aborts what is left, from the staged upload id.
            let _ = self.target.blobs.abort_multipart(self.target.key, &id).await;
        }
    }
}

/// Merges one planned output from the inputs and streams it to R2 under its staged key.
pub(crate) async fn write<S: Sql, B: Blobs>(
    planned: &PlannedOutput,
    scan: &Scan,
    inputs: &[FragmentInput],
    sql: &S,
    blobs: &B,
    config: &EngineConfig,
) -> PortResult<Merged> {
    let (output, target) = (&planned.plan, &Target { key: &planned.key, sql, blobs });
    let mut upload = PartUpload::new(target);
    let written = stream_output(output, scan, inputs, &mut upload, config).await;
    if written.is_err() {
        upload.abort().await;
    }
    let finished = written?;
    let quarantined = finished
        .quarantined
        .iter()
        .map(|(d, error)| Quarantined {
            fragment_key: scan.fragment(d).key.to_string(),
            table: scan.table(d).to_string(),
            error: error.clone(),
        })
        .collect();
    Ok(Merged {
        output: OutputRecord {
            key: target.key.to_owned(),
            period: output.period.clone(),
            table: output.table.clone(),
            schema_fingerprint: output.fingerprint.to_string(),
            rows: finished.rows,
            bytes: finished.bytes,
            source_segments: finished.source_segments,
            columns: fusou_lake::schema::columns_json(&columns_with_statistics(&finished)),
        },
        quarantined,
    })
}

async fn stream_output<S: Sql, B: Blobs>(
    output: &binpack::OutputPlan,
    scan: &Scan,
    inputs: &[FragmentInput],
    upload: &mut PartUpload<'_, '_, S, B>,
    config: &EngineConfig,
) -> PortResult<merge::Finished> {
    let mut merger = merge::Merger::new(output, config).map_err(|e| e.to_string())?;
    for &i in &output.inputs {
        let d = &scan.segments[i];
        let bytes = inputs[d.fragment as usize].bytes.slice(d.range());
        merger.push_input(scan, d, bytes).map_err(|e| e.to_string())?;
        loop {
            for part in merger.take_parts() {
                upload.send(part).await?;
            }
            if !merger.pump().map_err(|e| e.to_string())? {
                break;
            }
        }
    }
    let mut finished = merger.finish().map_err(|e| e.to_string())?;
    upload.finish(std::mem::take(&mut finished.parts)).await?;
    Ok(finished)
}

/// The output's columns as the lake reads them: each with the statistics the engine took from
/// the footer it wrote (bounds as JSON values of the column's kind).
pub(crate) fn columns_with_statistics(finished: &merge::Finished) -> Vec<fusou_lake::schema::Column> {
    let mut columns = fusou_lake::schema::columns(&finished.schema);
    for (column, stats) in columns.iter_mut().zip(&finished.statistics) {
        debug_assert_eq!(column.name, stats.name);
        let bound = |b: &Option<fusou_engine::stats::Bound>| b.as_ref().and_then(|b| serde_json::to_value(b).ok());
        column.values = Some(stats.values);
        column.nulls = Some(stats.nulls);
        column.bytes = Some(stats.bytes);
        (column.lower, column.upper) = (bound(&stats.lower), bound(&stats.upper));
    }
    columns
}
