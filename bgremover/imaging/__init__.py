"""Images at full resolution, with no knowledge of models: `decoding` (files in), `composing`
(masks applied), `encoding` (files out)."""
