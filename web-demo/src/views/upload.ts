// The upload form: title, file, visibility. Progress continues in the library.

import { alertBox, field, formatBytes, h } from '../dom';
import { humanMessage } from '../errors';
import { navigate } from '../router';
import { startUpload, type Visibility } from '../uploads';

export function uploadView(main: HTMLElement): void {
  const title = h('input', { type: 'text', name: 'title', required: true, maxlength: 200, autocomplete: 'off' });
  const file = h('input', { type: 'file', name: 'file', accept: 'video/*,.mp4,.mov,.webm,.mkv', required: true });
  const visibility = h(
    'select',
    { name: 'visibility' },
    h('option', { value: 'PRIVATE' }, 'Private: only you'),
    h('option', { value: 'UNLISTED' }, 'Unlisted: anyone with the link'),
    h('option', { value: 'PUBLIC' }, 'Public: listed for everyone'),
  );
  const chosen = h('p', { class: 'meta', 'aria-live': 'polite' });
  const alert = alertBox();
  const submit = h('button', { type: 'submit' }, 'Upload');

  file.addEventListener('change', () => {
    const f = file.files?.[0];
    chosen.textContent = f ? `${f.name}, ${formatBytes(f.size)}` : '';
    if (f && !title.value.trim()) title.value = f.name.replace(/\.[^.]+$/, '');
  });

  const form = h(
    'form',
    { class: 'card narrow' },
    field('Title', title),
    field('Video file', file, 'MP4, MOV, WebM or MKV. Large files upload in pieces and can be paused.'),
    chosen,
    field('Visibility', visibility),
    alert,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.clear();
    const f = file.files?.[0];
    if (!title.value.trim()) {
      alert.show('Please give the video a title.');
      title.focus();
      return;
    }
    if (!f) {
      alert.show('Please choose a video file.');
      file.focus();
      return;
    }
    submit.disabled = true;
    try {
      await startUpload(f, title.value.trim(), visibility.value as Visibility);
      navigate('/');
    } catch (err) {
      alert.show(humanMessage(err));
      submit.disabled = false;
    }
  });

  main.append(h('h1', {}, 'Upload a video'), form);
}
