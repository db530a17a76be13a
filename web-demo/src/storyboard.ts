// Storyboard scrub preview: a WebVTT index whose cues point into a sprite sheet
// (`sprite.jpg#xywh=x,y,w,h`), shown above a seek slider.

export interface StoryboardCue {
  start: number;
  end: number;
  url: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

function parseTime(t: string): number {
  const parts = t.trim().split(':').map(Number);
  return parts.reduce((acc, n) => acc * 60 + n, 0);
}

/** Parse the storyboard VTT; sprite URLs resolve against the VTT's URL and keep its signature. */
export function parseStoryboard(vtt: string, vttUrl: string): StoryboardCue[] {
  const base = new URL(vttUrl, location.href);
  const cues: StoryboardCue[] = [];
  const lines = vtt.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    const m = /^([\d:.]+)\s+-->\s+([\d:.]+)/.exec(lines[i]);
    const target = lines[i + 1]?.trim();
    if (!m || !target) continue;
    const [ref, fragment = ''] = target.split('#');
    const xywh = /xywh=(\d+),(\d+),(\d+),(\d+)/.exec(fragment);
    if (!xywh) continue;
    const url = new URL(ref, base);
    if (!url.search && base.search) url.search = base.search;
    cues.push({
      start: parseTime(m[1]),
      end: parseTime(m[2]),
      url: url.toString(),
      x: Number(xywh[1]),
      y: Number(xywh[2]),
      w: Number(xywh[3]),
      h: Number(xywh[4]),
    });
  }
  return cues;
}

export async function loadStoryboard(url: string): Promise<StoryboardCue[]> {
  const response = await fetch(url);
  if (!response.ok) return [];
  return parseStoryboard(await response.text(), url);
}

export function cueAt(cues: StoryboardCue[], time: number): StoryboardCue | undefined {
  return cues.find((c) => time >= c.start && time < c.end) ?? cues[cues.length - 1];
}
