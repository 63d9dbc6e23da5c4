"""ssl_ray: semi-supervised (pseudo-label) object detection at fleet scale on Ray.

Importing the package has no side effects: Ray and Ultralytics are imported lazily by the
stages that use them (see `ssl_ray.runtime`).
"""

__version__ = "0.1.0"
