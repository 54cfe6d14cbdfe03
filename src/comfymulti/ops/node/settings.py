"""Where things live on a GPU machine. The mount fields carry the names and defaults of the
`[cloud]` section, so this model can be filled from it; the rest are the node's own paths."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from comfymulti import __version__


class NodeSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sfs_mount: str = Field("/mnt/sfs", description="Where the shared file system is mounted.")
    scratch_mount: str = Field("/mnt/scratch", description="Where the scratch volume is mounted.")
    sfs_source: str = Field(
        "", description="NFS source of the SFS, host:/pseudo-path (empty: already mounted).")
    scratch_device: str = Field(
        "", description="Block device of the scratch volume, e.g. /dev/vdb (empty: already "
        "mounted); formatted only if it holds no file system.")
    models_dir: str = Field(
        "", description="Where ComfyUI reads models (empty: SFS/models; elsewhere, the SFS "
        "copy is taken before R2).")
    comfyui_dir: str = Field("/opt/ComfyUI", description="ComfyUI's folder (holds main.py).")
    comfyui_python: str = Field(
        "", description="Python that runs ComfyUI (empty: COMFYUI_DIR/.venv/bin/python, built "
        "from ComfyUI's requirements.txt when missing).")
    comfyui_repo: str = Field(
        "https://github.com/Comfy-Org/ComfyUI.git",
        description="Git repository ComfyUI is cloned from when COMFYUI_DIR has no main.py.")
    comfyui_ref: str = Field("v0.33.0", description="ComfyUI release (tag) to clone.")
    fstab: str = Field("/etc/fstab", description="Where mounts are recorded for a restart.")
    unit_dir: str = Field("/etc/systemd/system", description="Where the systemd units go.")
    systemctl: str = Field("systemctl", description="The systemctl command.")
    state_dir: str = Field(
        "/var/lib/comfymulti", description="The node's config (0600) and data folder.")
    package: str = Field(
        f"comfymulti=={__version__}",
        description="pip requirement installing comfymulti where it is missing (a version, "
        "wheel URL or git URL).")
    hub_wait: float = Field(300.0, ge=0, description="Seconds to wait for the hub to answer.")

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir or Path(self.sfs_mount) / "models")

    @property
    def sfs_models(self) -> Path:
        return Path(self.sfs_mount) / "models"

    @property
    def python_for_comfyui(self) -> str:
        return self.comfyui_python or str(Path(self.comfyui_dir) / ".venv" / "bin" / "python")
