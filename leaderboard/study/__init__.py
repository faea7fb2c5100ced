"""The research study behind the benchmark's defaults: encoder diagnostics (``maw-gym encoder
report``), the depth study over encoder variants (``maw-gym encoder study``) and its page
(``maw-gym encoder study-render``). It reads the core's stages like the leaderboard does, and
trains its own probes and controls."""
