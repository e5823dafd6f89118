"""The sweep-file language, the lowest layer: pure data, no torch model built here.

YAML loading with its guards (`yamlfile`), the dataclasses of a sweep file and overrides
(`config`), type checks and coercion (`typecheck`), the language's rules (`rules`: names, seeds,
optimizer options), and the one indirection from a name to a class (`registry`, with import paths
for user code in `userimport`). It imports nothing from raylab outside itself.
"""
