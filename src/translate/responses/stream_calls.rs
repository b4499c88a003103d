//! Tool-call fragments of the stream translator (see `stream.rs`).

use bytes::BytesMut;
use serde_json::Value;

use super::{ChatToResponsesStream, Result, Slot};
use crate::responses::{ItemStatus, OutputItem, StreamEvent};
use crate::translate::responses::frame::{call_id, write};

impl ChatToResponsesStream {
    /// One `delta.tool_calls[]` fragment.
    pub(super) fn tool(&mut self, c: &Value, out: &mut BytesMut) -> Result<()> {
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let f = c.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let args = f
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Servers that omit `index` send one call at a time: a new id is a new call.
        let index = match c.get("index").and_then(Value::as_u64) {
            Some(n) => n,
            None => match (id, self.calls.last()) {
                (Some(id), Some(&(n, slot))) if call_id(&self.slots[slot].item) == id => n,
                (None, Some(&(n, _))) => n,
                _ => self.calls.last().map_or(0, |&(n, _)| n + 1),
            },
        };
        let i = match self.calls.iter().find(|(n, _)| *n == index) {
            Some(&(_, i)) => i,
            None => {
                if let Some(t) = self.open_text.take() {
                    self.close(t, ItemStatus::Completed, out)?;
                }
                self.announce_pending(out)?;
                let i = self.slots.len();
                self.slots.push(Slot {
                    item: OutputItem::FunctionCall {
                        id: self.ctx.item_id("fc", i),
                        status: ItemStatus::InProgress,
                        call_id: id.map_or_else(|| self.ctx.item_id("call", i), str::to_owned),
                        name: String::new(),
                        namespace: None,
                        arguments: String::new(),
                    },
                    upstream_name: String::new(),
                    raw: String::new(),
                    added: false,
                    done: false,
                });
                self.calls.push((index, i));
                i
            }
        };
        let slot = &mut self.slots[i];
        if slot.upstream_name.is_empty() {
            if let Some(n) = name {
                slot.upstream_name = n.to_owned();
                if slot.added {
                    // Announced nameless (another item had to be announced after it):
                    // the name still reaches `output_item.done` and the final response.
                    self.name_item(i);
                }
            }
        }
        let slot = &mut self.slots[i];
        match &mut slot.item {
            OutputItem::FunctionCall {
                arguments, call_id, ..
            } => {
                // An id that comes after the first fragment still names the call, as long
                // as the client has not seen it.
                if let (Some(id), false) = (id, slot.added) {
                    id.clone_into(call_id);
                }
                arguments.push_str(args)
            }
            OutputItem::CustomToolCall { .. } => slot.raw.push_str(args),
            _ => {}
        }
        let is_function = matches!(slot.item, OutputItem::FunctionCall { .. });
        if !slot.added {
            if !slot.upstream_name.is_empty() {
                self.announce(i, out)?;
            }
        } else if is_function && !args.is_empty() {
            let item_id = self.slots[i].item.id().to_owned();
            write(
                out,
                &mut self.seq,
                StreamEvent::FunctionCallArgumentsDelta {
                    item_id: &item_id,
                    output_index: i,
                    delta: args,
                },
            )?;
        }
        Ok(())
    }

    /// Announces tool calls still waiting for their name, so that items are announced
    /// in output order (clients append items as they are announced).
    pub(super) fn announce_pending(&mut self, out: &mut BytesMut) -> Result<()> {
        for i in 0..self.slots.len() {
            if !self.slots[i].added {
                self.announce(i, out)?;
            }
        }
        Ok(())
    }

    /// Sets a tool call's name and namespace from the upstream name.
    fn name_item(&mut self, i: usize) {
        let (namespace, name) = self.ctx.tool_names.client(&self.slots[i].upstream_name);
        let (namespace, name) = (namespace.map(str::to_owned), name.to_owned());
        if let OutputItem::FunctionCall {
            name: item_name,
            namespace: item_namespace,
            ..
        } = &mut self.slots[i].item
        {
            *item_name = name;
            *item_namespace = namespace;
        }
    }

    /// `output_item.added` for a tool call (its name mapped back), then the arguments
    /// received before it, as one delta.
    pub(super) fn announce(&mut self, i: usize, out: &mut BytesMut) -> Result<()> {
        if self.ctx.tool_names.is_custom(&self.slots[i].upstream_name) {
            return self.announce_custom(i, out);
        }
        self.name_item(i);
        let slot = &mut self.slots[i];
        slot.added = true;
        let OutputItem::FunctionCall {
            id,
            call_id,
            arguments,
            name,
            namespace,
            ..
        } = &slot.item
        else {
            return Ok(());
        };
        let announced = OutputItem::FunctionCall {
            id: id.clone(),
            status: ItemStatus::InProgress,
            call_id: call_id.clone(),
            name: name.clone(),
            namespace: namespace.clone(),
            arguments: String::new(),
        };
        let seq = &mut self.seq;
        write(
            out,
            seq,
            StreamEvent::OutputItemAdded {
                output_index: i,
                item: &announced,
            },
        )?;
        if !arguments.is_empty() {
            write(
                out,
                seq,
                StreamEvent::FunctionCallArgumentsDelta {
                    item_id: id,
                    output_index: i,
                    delta: arguments,
                },
            )?;
        }
        Ok(())
    }

    /// A call to a custom tool: a `custom_tool_call` item, whose input is read from the
    /// JSON arguments when the call is complete (no input deltas before that).
    fn announce_custom(&mut self, i: usize, out: &mut BytesMut) -> Result<()> {
        let slot = &mut self.slots[i];
        slot.added = true;
        let (call_id, arguments) = match &mut slot.item {
            OutputItem::FunctionCall {
                call_id, arguments, ..
            } => (std::mem::take(call_id), std::mem::take(arguments)),
            _ => return Ok(()),
        };
        slot.raw = arguments;
        slot.item = OutputItem::CustomToolCall {
            id: self.ctx.item_id("ctc", i),
            status: ItemStatus::InProgress,
            call_id,
            name: slot.upstream_name.clone(),
            input: String::new(),
        };
        write(
            out,
            &mut self.seq,
            StreamEvent::OutputItemAdded {
                output_index: i,
                item: &slot.item,
            },
        )
    }
}
