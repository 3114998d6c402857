-- Product copy (the Qwen3.5 family): every output a description has (a JSON object: `alt_text`,
-- `description`, `seo_title` as text, `keywords` as a list), the language it is written in, and
-- the product context (JSON) and tone the request gave. A row from before has NULL outputs: its
-- one text is its alt text. Versions keep the outputs they had.
ALTER TABLE descriptions ADD COLUMN outputs TEXT;
ALTER TABLE descriptions ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
ALTER TABLE descriptions ADD COLUMN context TEXT;
ALTER TABLE descriptions ADD COLUMN tone TEXT;
ALTER TABLE description_versions ADD COLUMN outputs TEXT;
