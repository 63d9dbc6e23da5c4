#!/usr/bin/env bash
# GPU figures for docs/benchmarks.md and the sizing guide in docs/cluster.md, on one GPU machine
# with ray, ultralytics and this project importable (PYTHONPATH or an installed venv):
#
#     bash bench/gpu.sh OUT_DIR
#
# Writes OUT_DIR/{env.txt,teacher_profile.json,fleet_video.json,photos.json,train.json} and a log
# of each; ~8 minutes at most. The open question first: the trained-teacher collapse (17-19 images/s).
set -u
out=${1:?usage: bench/gpu.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; free -g | head -2
  $py -c "import ray, ultralytics, torch; print('ray', ray.__version__, 'ultralytics', ultralytics.__version__,
'torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$out/env.txt" 2>&1
cat "$out/env.txt"
# Where an inference call spends its time, trained teacher against untrained (the collapse).
timeout 75 $py -m bench.teacher_profile --device cuda --batch 64 --repeat 5 --threads 4 \
  --json "$out/teacher_profile.json" > "$out/teacher_profile.log" 2>&1
echo "teacher profile rc=$?"; cat "$out/teacher_profile.json" 2>/dev/null
# Fleet video with the trained teacher: stage against Ultralytics, square and rect canvases, key frames.
timeout 150 $py -m bench.label_throughput --mode fleet-video --device cuda --imgsz 640 --threads 4 --no-memory \
  --clips 3 --seconds 60 --json "$out/fleet_video.json" > "$out/fleet_video.log" 2>&1
echo "fleet video rc=$?"; cat "$out/fleet_video.json" 2>/dev/null
# 1080p camera JPEGs with the trained teacher at 640: b/c, and CPU decode tasks against nvJPEG in the
# actor (label.decode: gpu) side by side, with the boxes each finds.
timeout 150 $py -m bench.label_throughput --mode photos --device cuda --n 600 --imgsz 640 --threads 4 --no-memory \
  --device-decode --json "$out/photos.json" > "$out/photos.log" 2>&1
echo "photos rc=$?"; cat "$out/photos.json" 2>/dev/null
# Training: one Ray Train worker on the GPU against YOLO.train(device=0), AMP on.
timeout 110 $py -m bench.train_overhead --device cuda --epochs 4 --imgsz 640 --n-train 1024 --data-imgsz 320 \
  --batch 32 --threads 8 --json "$out/train.json" > "$out/train.log" 2>&1
echo "train rc=$?"; cat "$out/train.json" 2>/dev/null
tail -5 "$out"/*.log
