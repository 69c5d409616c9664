"""Training: configs (`config`), the jitted scan loop (`loop`), data-parallel helpers (`parallel`) and the run dir life cycle (`run`)."""
