"""Where a run executes: this kernel (``host``) or the throwaway lab VM (``vm``)."""
