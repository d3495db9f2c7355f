import { h } from './dom.js';

export interface Series {
  label: string;
  color: string;
  points: Array<number | null>;
}

/**
 * A small line chart drawn on a canvas: the last N points of a few series, a zero
 * baseline and the maximum as the scale. Drawn by hand so nothing is fetched at run time.
 */
export class LineChart {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly legend: HTMLElement;
  private readonly current: HTMLElement;

  constructor(
    readonly title: string,
    private readonly unit: string,
    private readonly capacity: number,
  ) {
    this.canvas = h('canvas', { class: 'chart-canvas', width: 400, height: 150 });
    this.legend = h('div', { class: 'chart-legend' });
    this.current = h('span', { class: 'chart-current' });
    this.element = h(
      'section',
      { class: 'card chart', 'data-chart': title },
      h('header', { class: 'chart-head' }, h('h3', null, title), this.current),
      this.canvas,
      this.legend,
    );
  }

  private format(value: number): string {
    if (!Number.isFinite(value)) return '—';
    const abs = Math.abs(value);
    const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
    return `${value.toFixed(digits)}${this.unit ? ` ${this.unit}` : ''}`;
  }

  draw(series: Series[]): void {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || 400;
    const height = this.canvas.clientHeight || 150;
    if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
    if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const values = series.flatMap((s) => s.points.filter((p): p is number => p !== null && Number.isFinite(p)));
    const max = Math.max(1e-9, ...values) * 1.15;
    const left = 4;
    const right = width - 4;
    const top = 16;
    const bottom = height - 6;

    ctx.strokeStyle = '#e2e8f0';
    ctx.lineWidth = 1;
    for (const fraction of [0, 0.5, 1]) {
      const y = bottom - (bottom - top) * fraction;
      ctx.beginPath();
      ctx.moveTo(left, y + 0.5);
      ctx.lineTo(right, y + 0.5);
      ctx.stroke();
    }
    ctx.fillStyle = '#64748b';
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillText(this.format(max / 1.15), left + 2, top - 4);

    const step = (right - left) / Math.max(1, this.capacity - 1);
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let drawing = false;
      const offset = this.capacity - s.points.length;
      s.points.forEach((point, i) => {
        if (point === null || !Number.isFinite(point)) {
          drawing = false;
          return;
        }
        const x = left + (offset + i) * step;
        const y = bottom - (bottom - top) * (point / max);
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      });
      ctx.stroke();
    }

    this.legend.replaceChildren(
      ...series.map((s) => {
        const last = [...s.points].reverse().find((p) => p !== null);
        return h(
          'span',
          { class: 'legend-item' },
          h('i', { class: 'swatch', style: `background:${s.color}` }),
          `${s.label}: ${last === undefined || last === null ? '—' : this.format(last)}`,
        );
      }),
    );
    const first = series[0];
    const latest = first ? [...first.points].reverse().find((p) => p !== null) : undefined;
    this.current.textContent = latest === undefined || latest === null ? '—' : this.format(latest);
  }
}
