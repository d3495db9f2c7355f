-- Full-text search keeps each searchable collection's tsvector in a generated, stored
-- column ("$search") with a GIN index on it, instead of a GIN index on the expression:
-- relevance (ts_rank) reads the vector of every match, and from an expression index it had
-- to compute to_tsvector again for each one — most of a search's time. This converts the
-- collections made before: the expression index goes, the column (computed for every row,
-- which rewrites the table) and its index come, under the index's old name.
DO $$
DECLARE
  c record;
  vector text;
  index_name text;
BEGIN
  FOR c IN SELECT name, search FROM basalt.collections WHERE search IS NOT NULL AND search <> 'null'::jsonb LOOP
    -- The same expression as searchVectorExpr (server/modules/documents/search.ts); path
    -- segments are [A-Za-z0-9_-] and the language a checked configuration name.
    SELECT '(' || string_agg(
             format('setweight(to_tsvector(%L::regconfig, coalesce((data #> %L) #>> ''{}'', '''')), %L)',
                    coalesce(c.search ->> 'language', 'simple'),
                    '{' || replace(f.path, '.', ',') || '}',
                    CASE WHEN f.ord <= 3 THEN substr('ABC', f.ord::int, 1) ELSE 'D' END),
             ' || ' ORDER BY f.ord) || ')'
      INTO vector
      FROM jsonb_array_elements_text(c.search -> 'fields') WITH ORDINALITY AS f(path, ord);
    IF vector IS NULL THEN
      CONTINUE;
    END IF;
    -- indexName(collection, '$search') of repository.ts: sha256 of ["<name>","$search"].
    index_name := 'bx_' || left(encode(sha256(convert_to('["' || c.name || '","$search"]', 'UTF8')), 'hex'), 40);
    EXECUTE format('DROP INDEX IF EXISTS basalt_data.%I', index_name);
    EXECUTE format('ALTER TABLE basalt_data.%I DROP COLUMN IF EXISTS "$search"', c.name);
    EXECUTE format('ALTER TABLE basalt_data.%I ADD COLUMN "$search" tsvector GENERATED ALWAYS AS (%s) STORED',
                   c.name, vector);
    EXECUTE format('CREATE INDEX %I ON basalt_data.%I USING gin ("$search")', index_name, c.name);
  END LOOP;
END
$$;
