"""The OpenVINO backend (the only place OpenVINO is imported)."""
