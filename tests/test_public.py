"""Public datasets -> manifest: one tiny synthetic copy of each released layout, end to end through `load_dataset`.

The layouts, column names and label rules are documented (with sources) in nbs/02b_public.ipynb.
"""
import csv, io
from pathlib import Path
import pandas as pd
import pytest
from tsbn_nb.core import TsbnError
from tsbn_nb.datasets import load_dataset
from tsbn_nb.dicom import read_mammogram
import pydicom
from tsbn_nb.public import (MANIFEST_COLUMNS, PUBLIC_DATASETS, build_manifest, detect_kind, manifest_command,
                            read_table_rows)
from tsbn_nb.testing import fake_public_layout


def build(kind, tmp_path, **kw):
    "Tiny layout of `kind` -> manifest -> (result, manifest indexed by image_id, df as training reads it)."
    src = fake_public_layout(kind, tmp_path / 'download')
    res = build_manifest(kind, src, tmp_path / 'manifest.csv', **kw)
    man = pd.read_csv(res.out_csv, dtype=str, keep_default_na=False)
    assert list(man.columns) == MANIFEST_COLUMNS
    df = load_dataset(res.out_csv)
    assert len(df) == len(man) and set(df.patient_id) == set(man.patient_id)
    for p in df.path:                                          # every image the publisher's format ships must decode
        img = read_mammogram(p)[0]
        assert img.ndim == 2 and img.min() >= 0 and img.max() <= 1 and img.max() > img.min(), p
    return res, man.set_index('image_id'), df


def reasons(res):
    return sorted((c.image_id, c.reason) for c in res.excluded)


def test_mias(tmp_path):
    res, man, df = build('mias', tmp_path)
    assert man.label.to_dict() == {'mdb001': '0', 'mdb002': '0', 'mdb003': '0', 'mdb004': '0', 'mdb005': '1', 'mdb006': '1'}
    assert man.loc['mdb002', ['patient_id', 'laterality', 'view']].tolist() == ['mias001', 'L', 'MLO']
    assert reasons(res) == [('mdb007', 'abnormality without severity'), ('mdb008', 'no image file'), ('mdb009', 'not in Info.txt')]
    assert df.path[0].endswith('.pgm') and Path(df.path[0]).read_bytes()[:2] == b'P5'   # 8-bit binary PGM film scan
    assert read_mammogram(df.path[0])[0].shape == (64, 64)


def test_cbis_ddsm(tmp_path):
    res, man, df = build('cbis-ddsm', tmp_path)
    assert man.label.to_dict() == {'P_00001_LEFT_CC': '1', 'P_00001_LEFT_MLO': '1', 'P_00004_RIGHT_CC': '1',
                                   'P_00005_RIGHT_CC': '0', 'P_00005_RIGHT_MLO': '0', 'P_00016_LEFT_CC': '0'}
    assert man.loc['P_00004_RIGHT_CC', 'source_label'] == 'BENIGN MALIGNANT'          # any malignant finding
    assert all('full mammogram images' in p for p in man.path)                        # never an ROI mask
    assert reasons(res) == [('Mass-Test_P_00016_LEFT_CC', 'copy of the same DDSM image'),
                            ('Mass-Test_P_00017_LEFT_MLO', 'DICOM not found')]
    assert pydicom.dcmread(df.path[0], stop_before_pixels=True).BitsStored == 16


def test_cbis_ddsm_copy_with_malignant_finding_wins(tmp_path):
    "A film in both CSVs: benign as a calcification, malignant as a mass -> one malignant image."
    src = fake_public_layout('cbis-ddsm', tmp_path / 'download')
    f = src / 'mass_case_description_test_set.csv'
    rows = list(csv.reader(io.StringIO(f.read_text())))
    rows[1][9] = 'MALIGNANT'                                                           # Mass-Test_P_00016_LEFT_CC
    buf = io.StringIO(); csv.writer(buf, lineterminator='\n').writerows(rows); f.write_text(buf.getvalue())
    res = build_manifest('cbis-ddsm', src, tmp_path / 'm.csv')
    kept = {c.image_id: c for c in res.kept}
    assert kept['P_00016_LEFT_CC'].label == 1 and 'Calc-Test' in kept['P_00016_LEFT_CC'].path


def test_cbis_ddsm_unknown_pathology_is_excluded(tmp_path):
    src = fake_public_layout('cbis-ddsm', tmp_path / 'download')
    f = src / 'calc_case_description_train_set.csv'
    f.write_text(f.read_text().replace('BENIGN', 'UNPROVEN', 1))                       # P_00005 RIGHT CC
    res = build_manifest('cbis-ddsm', src, tmp_path / 'm.csv')
    assert ('Calc-Training_P_00005_RIGHT_CC', 'unknown pathology') in reasons(res)


def test_vindr(tmp_path):
    res, man, df = build('vindr', tmp_path)
    assert man.label.to_dict() == {'a1': '0', 'a2': '0', 'a3': '1', 'a4': '1', 'b3': '0', 'b4': '1'}
    assert man.loc['b4', ['patient_id', 'laterality', 'view']].tolist() == ['s2', 'R', 'MLO']
    assert reasons(res) == [('b1', 'BI-RADS 3 excluded'), ('b2', 'BI-RADS 3 excluded'), ('c1', 'DICOM not found')]
    assert pydicom.dcmread(df.path[0], stop_before_pixels=True).file_meta.TransferSyntaxUID.name.startswith('JPEG 2000')


def test_cmmd(tmp_path):
    res, man, df = build('cmmd', tmp_path)
    got = {(r.patient_id, r.laterality, r.view, r.label) for r in man.itertuples()}
    assert got == {('D1-0001', 'R', 'CC', '0'), ('D1-0001', 'R', 'MLO', '0'), ('D1-0002', 'L', 'CC', '1'),
                   ('D1-0002', 'L', 'MLO', '1'), ('D2-0003', 'L', 'CC', '1'), ('D2-0003', 'R', 'MLO', '0')}
    assert [(c.patient_id, c.laterality, c.reason) for c in res.excluded] == [('D1-0002', 'R', 'breast not in the clinical table')]
    assert pydicom.dcmread(df.path[0], stop_before_pixels=True).PhotometricInterpretation == 'MONOCHROME1'


def test_cmmd_reads_a_csv_export_of_the_clinical_sheet(tmp_path):
    src = fake_public_layout('cmmd', tmp_path / 'download')
    header, rows = read_table_rows(src / 'CMMD_clinicaldata_revision.xlsx')
    xlsx = (src / 'CMMD_clinicaldata_revision.xlsx'); xlsx.unlink()
    lines = [';'.join(header)] + [';'.join([r['id1'], r['leftright'], r['age'], r['number'], r['abnormality'],
                                            r['classification'], r['subtype']]) for r in rows]
    (src / 'CMMD_clinicaldata_revision.csv').write_text('\n'.join(lines) + '\n')
    res = build_manifest('cmmd', src, tmp_path / 'm.csv')
    assert len(res.kept) == 6 and sum(c.label for c in res.kept) == 3


def test_inbreast(tmp_path):
    res, man, df = build('inbreast', tmp_path)
    assert man.label.to_dict() == {'20586908': '0', '20586934': '0', '22678622': '1', '22678646': '1', '24065584': '0'}
    assert reasons(res) == [('24065530', 'BI-RADS 3 excluded')]


def test_command_prints_counts_and_reasons(tmp_path, capsys):
    src = fake_public_layout('vindr', tmp_path / 'download')
    assert detect_kind(src) == 'vindr'
    assert manifest_command('auto', src, tmp_path / 'manifest.csv') == 0
    out = capsys.readouterr().out
    for part in ('VinDr-Mammo (vindr)', '3 benign/normal (0), 3 malignant (1)', '2  BI-RADS 3 excluded',
                 '1  DICOM not found', 'manifest_excluded.csv', 'tsbn data info'):
        assert part in out, (part, out)
    excl = pd.read_csv(tmp_path / 'manifest_excluded.csv')
    assert list(excl.columns) == ['image_id', 'path', 'reason', 'detail', 'source_label'] and len(excl) == 3


@pytest.mark.parametrize('kind,needs', [('mias', 'Info.txt'), ('cbis-ddsm', 'case_description'),
                                        ('vindr', 'breast-level_annotations.csv'), ('cmmd', 'clinicaldata'),
                                        ('inbreast', 'INbreast.csv')])
def test_empty_folder_errors_name_the_missing_file(tmp_path, kind, needs):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(TsbnError, match=needs):
        build_manifest(kind, tmp_path / 'empty', tmp_path / 'm.csv')


def test_every_kind_is_documented():
    for k, d in PUBLIC_DATASETS.items():
        assert d['title'] and d['layout'] and d['url'] and callable(d['reader']), k
